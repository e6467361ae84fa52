"""Shared test machinery: every case module runs in every launch mode.

- single rank, in this pytest process: ``hpcray.init()`` once per module, cases called directly
  (tasks in threads of the process: ``HPCRAY_SPAWN=0``);
- MPI: ``mpiexec -n 4 python tests/run_cases.py MODULE`` once per module, as a subprocess with a
  timeout, so a hang or a crash fails that module's cases, never the whole run;
- spawn: ``python tests/run_cases.py MODULE`` whose ``init()`` spawns 3 worker ranks
  (``HPCRAY_SPAWN=1``), as a subprocess with a timeout too.
"""

import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MPI_RANKS = int(os.environ.get("HPCRAY_TEST_RANKS", "4"))
# The environment as the test run began: subprocesses start from it, not from os.environ, which a
# single-rank session of a case module changes (its ENV) for as long as that session is open.
BASE_ENV = dict(os.environ)
# "single" means one process: a plain `python` run spawns no workers unless a test asks for it
BASE_ENV.setdefault("HPCRAY_SPAWN", "0")
os.environ.setdefault("HPCRAY_SPAWN", "0")
SPAWN_ENV = {"HPCRAY_SPAWN": "1", "HPCRAY_SPAWN_WORKERS": str(MPI_RANKS - 1)}


def alive(pid: int) -> bool:
    """Whether process ``pid`` lives (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mpiexec() -> str:
    """The mpiexec next to this Python (the [test] extra's MPI wheel), else the one on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else "mpiexec"


def _run(command, timeout, env, cwd):
    full_env = dict(BASE_ENV)
    full_env.update(env or {})
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env,
                              cwd=cwd or HERE)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(command, -9, out, err + f"\nTIMEOUT after {timeout} s")


def run_mpi(args, ranks=MPI_RANKS, timeout=240, env=None, cwd=None):
    """Run ``mpiexec -n ranks python args...``; returns CompletedProcess (never hangs)."""
    return _run([mpiexec(), "-n", str(ranks), sys.executable] + list(args), timeout, env, cwd)


def run_single(args, timeout=240, env=None, cwd=None):
    """Run ``python args...`` (single rank); returns CompletedProcess (never hangs)."""
    return _run([sys.executable] + list(args), timeout, env, cwd)


def run_spawn(args, timeout=240, env=None, cwd=None):
    """Run ``python args...`` whose init() spawns MPI_RANKS - 1 worker ranks."""
    return _run([sys.executable] + list(args), timeout, dict(SPAWN_ENV, **(env or {})), cwd)


def case_names(module):
    return sorted(n for n in dir(module) if n.startswith("case_"))


_mpi_cache = {}


def mpi_case_results(module_name, env=None, ranks=MPI_RANKS, timeout=300, launch="mpi"):
    """Run a case module under mpiexec (or spawning its workers) once; map case name ->
    (passed, detail)."""
    key = (module_name, ranks, launch)
    if key not in _mpi_cache:
        started = time.monotonic()
        script = [os.path.join(HERE, "run_cases.py"), module_name]
        if launch == "spawn":
            proc = run_spawn(script, timeout=timeout, env=env)
        else:
            proc = run_mpi(script, ranks=ranks, timeout=timeout, env=env)
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("CASE "):
                parts = line.split(" ", 3)
                results[parts[1]] = (parts[2], json.loads(parts[3]) if parts[2] in ("FAIL", "SKIP") else "")
        tail = (f"exit {proc.returncode} after {time.monotonic() - started:.1f} s\n"
                f"stdout tail:\n{proc.stdout[-3000:]}\nstderr tail:\n{proc.stderr[-3000:]}")
        _mpi_cache[key] = (results, tail)
    return _mpi_cache[key]


def check_mpi_case(module_name, case, env=None, ranks=MPI_RANKS, launch="mpi"):
    results, tail = mpi_case_results(module_name, env=env, ranks=ranks, launch=launch)
    where = f"mpiexec -n {ranks}" if launch == "mpi" else f"python with {ranks - 1} spawned workers"
    if case not in results:
        pytest.fail(f"case {case} did not report under {where}\n{tail}")
    outcome, detail = results[case]
    if outcome == "SKIP":
        pytest.skip(detail)
    if outcome != "PASS":
        pytest.fail(f"case {case} failed under {where}:\n{detail}")


@pytest.fixture(params=["scan", "index"])
def placement_path(request, monkeypatch):
    """The scheduler's two ways of finding a rank for a task: the scan of a small job and the
    RoomIndex of a large one (forced here for a job of any size). Tests of the scheduler use
    both (``pytestmark = pytest.mark.usefixtures("placement_path")``)."""
    from hpcray._private import scheduler
    monkeypatch.setattr(scheduler, "INDEX_RANKS", 10**9 if request.param == "scan" else 0)
    return request.param
