"""The failure model at the level of the job: crashes, ranks that cannot answer, a failed loop,
calls after shutdown. Each scenario runs as a subprocess with a timeout (both launch modes where
the situation exists in both)."""

import os
import re
import time

import pytest

from conftest import run_mpi
from test_lifecycle import MODES, SCENARIOS, run


def shm_files():
    return {name for name in os.listdir("/dev/shm")}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how", ["exit", "exit0", "segfault"])
def test_a_crashing_task_leaves_a_traceback_naming_it(mode, how):
    proc = run(mode, "crash_report.py", how, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "NOT_REACHED" not in proc.stdout, output
    if mode == "spawn":  # the driver also sees its workers gone, names them and what they held
        task = "calls_os_exit" if how.startswith("exit") else "reads_address_zero"
        assert re.search(rf"hpcray: spawned worker .*rank \d+ \(pid \d+ on [^;)]+; it held tasks {task}\).* died",
                         proc.stderr), output
    if how.startswith("exit"):
        code, status = (7, 7) if how == "exit" else (0, 1)
        assert re.search(rf"the task calls_os_exit \(task [0-9a-f]+\) on rank \d+ \(pid \d+\) called "
                         rf"os\._exit\({code}\); the process ends with status {status}", proc.stderr), output
        assert "in calls_os_exit" in proc.stderr, output  # the task's own frame, in its stack
    else:
        assert "Fatal Python error: Segmentation fault" in proc.stderr, output
        assert "in reads_address_zero" in proc.stderr, output


@pytest.mark.parametrize("how", ["stop", "gil"])
def test_the_job_ends_when_a_rank_cannot_answer_at_exit(how):
    """Only under MPI: a single-rank job has no other rank."""
    before = shm_files()
    started = time.monotonic()
    proc = run_mpi([os.path.join(SCENARIOS, "stopped_rank.py"), how], ranks=3, timeout=60,
                   env={"HPCRAY_EXIT_TIMEOUT_S": "3"})
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    victim = re.search(r"VICTIM (\d+) (\d+)", proc.stdout)
    assert victim and "DRIVER_ENDS" in proc.stdout, output
    assert proc.returncode != 0 and proc.returncode != -9, output  # ended by itself, not the timeout
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end\n{output}"
    assert re.search(rf"rank {victim.group(1)} \(pid {victim.group(2)} on [^)]+\) did not answer within "
                     r"HPCRAY_EXIT_TIMEOUT_S=3 s", proc.stderr), output
    assert not os.path.exists(f"/proc/{victim.group(2)}/stat") or \
        open(f"/proc/{victim.group(2)}/stat").read().split(")")[1].split()[0] == "Z", "the rank outlived the job"
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


@pytest.mark.parametrize("mode", MODES)
def test_a_failed_loop_ends_the_job_loudly(mode):
    before = shm_files()
    started = time.monotonic()
    proc = run(mode, "loop_failure.py", timeout=90)
    output = proc.stdout + proc.stderr
    assert "FIRST" in proc.stdout, output
    assert "STILL_RUNNING" not in proc.stdout, output
    if mode == "single":
        assert proc.returncode == 70, output
    else:  # MPI_Abort(70); the launcher may report the abort's status or the signal it sent
        assert proc.returncode not in (0, -9), output
    assert time.monotonic() - started < 30, output
    assert "injected bug in the loop" in proc.stderr, output
    # the failed rank says where it ran and what it held
    assert re.search(r"the loop of rank \d+ \(pid \d+ on [^;)]+; it held tasks held_up\) failed \(a bug in hpcray\)",
                     proc.stderr), output
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"
