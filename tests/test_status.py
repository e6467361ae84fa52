"""The job's status table (status.py): SIGUSR1 to the driver, to the whole job, HPCRAY_STATUS_S."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import BASE_ENV, MPI_RANKS, mpiexec
from test_lifecycle import MODES, SCENARIOS, run

SCRIPT = os.path.join(SCENARIOS, "status.py")
# rank, pid, running, queued, finished, failed, actors, objects MB, arena MB (used/size, or -)
ROW = re.compile(r"^\s+(\d+) +\S+ +(\d+) +[\d.]+/[\d.]+ +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) +(\S+) +(\S+)$",
                 re.M)


def worker_ranks(mode):
    return [0] if mode == "single" else list(range(1, MPI_RANKS))


@pytest.mark.parametrize("mode", MODES)
def test_sigusr1_prints_a_row_per_rank_and_what_no_rank_can_take(mode):
    proc = run(mode, "status.py", "self", timeout=90)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DONE" in proc.stdout, output
    assert proc.stderr.count("hpcray status at") == 1, output
    rows = ROW.findall(proc.stderr)
    assert sorted(int(r[0]) for r in rows) == worker_ranks(mode), output
    assert sum(int(r[2]) for r in rows) >= 1, output  # 8 one-CPU tasks were submitted before the signal
    for row in rows:
        assert int(row[2]) <= 2, output  # no rank runs more tasks than it has CPUs
        assert re.fullmatch(r"[\d.]+", row[7]) and re.fullmatch(r"[\d]+/[\d]+|-", row[8]), output  # answered
    # the scenario keeps a large value made by a task: its rank shows it, in its arena or privately
    held = [float(r[7]) + (float(r[8].split("/")[0]) if "/" in r[8] else 0.0) for r in rows]
    assert max(held) >= 7, output
    assert re.search(r"pending for good: 1 x never needs \{[^}]*'no-such-thing': 1", proc.stderr), output


def test_hpcray_status_s_prints_the_table_every_n_seconds():
    proc = run("mpi", "status.py", "run", "3", timeout=90, env={"HPCRAY_STATUS_S": "0.5"})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DONE" in proc.stdout, output
    assert proc.stderr.count("hpcray status at") >= 3, output
    finished = [sum(int(r[4]) for r in ROW.findall(table)) for table in proc.stderr.split("hpcray status at")[1:]]
    assert finished == sorted(finished) and finished[-1] > finished[0], output  # the counts move on


def test_sigusr1_to_the_whole_mpi_job_only_makes_the_driver_report():
    """mpiexec (as Slurm's scancel --signal) passes the signal to every rank: workers ignore it."""
    env = dict(BASE_ENV, PYTHONUNBUFFERED="1")
    job = subprocess.Popen([mpiexec(), "-n", str(MPI_RANKS), sys.executable, SCRIPT, "run", "4"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert job.stdout.readline().startswith("DRIVER"), job.stderr.read()
        time.sleep(1)
        job.send_signal(signal.SIGUSR1)
        out, err = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0 and "DONE" in out, out + err
    assert err.count("hpcray status at") == 1, err
    assert sorted(int(r[0]) for r in ROW.findall(err)) == worker_ranks("mpi"), err


@pytest.mark.parametrize("mode", MODES)
def test_the_table_shows_how_far_a_waiting_get_has_come(mode):
    proc = run(mode, "status.py", "progress", timeout=90)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "DONE" in proc.stdout, output
    found = re.findall(r"driver thread MainThread waits in get/wait: (\d+) of 24 objects ready, for ([\d.]+) s",
                       proc.stderr)
    assert len(found) == 1, output
    ready, waited = int(found[0][0]), float(found[0][1])
    assert ready < 24 and waited >= 0.5, output
