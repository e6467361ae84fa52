"""Run every ``case_*`` function of a module in tests/cases under one hpcray session.

    python tests/run_cases.py MODULE              (single rank)
    mpiexec -n 4 python tests/run_cases.py MODULE (rank 0 drives, ranks 1-3 serve)

Prints one line per case: ``CASE <name> PASS``, ``CASE <name> SKIP <json reason>`` or
``CASE <name> FAIL <json traceback>``, so the
pytest side can report each case on its own.

Cases share the session, so none may leave work behind for the next (``helpers.run_case``).
"""

import importlib
import json
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hpcray  # noqa: E402
from cases.helpers import CaseSkipped, run_case  # noqa: E402

def main() -> int:
    name = sys.argv[1]
    only = sys.argv[2:]
    os.environ.setdefault("CASE_TMP", tempfile.mkdtemp(prefix="hpcray-case-"))
    module = importlib.import_module(f"cases.{name}")
    hpcray.init(**getattr(module, "INIT_KWARGS", {}))
    failures = 0
    for case in sorted(n for n in dir(module) if n.startswith("case_")):
        if only and case not in only:
            continue
        started = time.monotonic()
        try:
            run_case(getattr(module, case))
            print(f"CASE {case} PASS {time.monotonic() - started:.2f}", flush=True)
        except CaseSkipped as why:
            print(f"CASE {case} SKIP {json.dumps(str(why))}", flush=True)
        except BaseException:  # report every failure, keep going
            failures += 1
            print(f"CASE {case} FAIL {json.dumps(traceback.format_exc())}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
