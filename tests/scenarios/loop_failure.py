"""A bug in a rank's loop (injected: the executor fails on one task's EXECUTE) ends the job within
seconds, with that rank's traceback on the driver's terminal and a non-zero exit status.

    python loop_failure.py          mpiexec -n 4 python loop_failure.py
"""

import os
import sys
import time

import hpcray as ray
from hpcray._private import executor

real_on_execute = executor.Executor.on_execute


def failing_on_execute(self, spec, blob, values):
    if spec.name == "explode":
        raise RuntimeError(f"injected bug in the loop of pid {os.getpid()}")
    return real_on_execute(self, spec, blob, values)


executor.Executor.on_execute = failing_on_execute  # (above init(): on every rank)
ray.init()


@ray.remote
def fine():
    return ray.get_runtime_context().get_rank()


@ray.remote
def explode():
    return "never"


print("FIRST", ray.get(fine.remote(), timeout=30), flush=True)
started = time.monotonic()
try:
    ray.get(explode.remote(), timeout=60)
except BaseException as exc:  # a failed loop may first fail the waiters, but the job ends
    print("RAISED", type(exc).__name__, flush=True)
time.sleep(30)
print("STILL_RUNNING", time.monotonic() - started, flush=True)
sys.exit(0)
