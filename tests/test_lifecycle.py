"""The life of a job: exit status, signals, what runs on which rank, printing, re-init, idle CPU.
Each scenario runs as a subprocess with a timeout, single rank and under mpiexec."""

import json
import os
import re
import time

import pytest

from conftest import MPI_RANKS, alive, run_mpi, run_single, run_spawn
from hpcray._private.config import INDEX_RANKS

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "scenarios")
MODES = ["single", "mpi", "spawn"]


def run(mode, script, *args, timeout=60, env=None):
    path = os.path.join(SCENARIOS, script)
    if mode == "single":
        return run_single([path, *args], timeout=timeout, env=env)
    if mode == "spawn":
        return run_spawn([path, *args], timeout=timeout, env=env)
    return run_mpi([path, *args], timeout=timeout, env=env)


def worker_pids(output: str):
    match = re.search(r"WORKER_PIDS ([\d ]+)", output)
    assert match, output
    return [int(p) for p in match.group(1).split()]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("how,status", [("normal", 0), ("raise", 1), ("sysexit", 3), ("sigterm", 143),
                                        ("sigint", "SIGINT"), ("busy", 0)])
def test_driver_exit_ends_every_rank_with_its_status(mode, how, status):
    if status == "SIGINT":
        # single rank: Python ends an uncaught KeyboardInterrupt by re-raising SIGINT on itself;
        # an MPI driver exits 130 after the ranks have left (see runtime._install_interrupt_exit)
        status = -2 if mode == "single" else 130
    shm_before = set(os.listdir("/dev/shm"))
    started = time.monotonic()
    proc = run(mode, "exit_status.py", how, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert elapsed < 30, f"the job took {elapsed:.1f} s to end"
    for pid in worker_pids(proc.stdout):
        assert not alive(pid), f"rank process {pid} outlived the driver"
    # memory a running task may still use is left registered on purpose, without UCX's warnings
    assert "UCX  WARN" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    if how == "raise":
        assert "driver failed on purpose" in proc.stderr
    left = set(os.listdir("/dev/shm")) - shm_before
    assert not left, f"left in /dev/shm: {sorted(left)}"


@pytest.mark.parametrize("mode", MODES)
def test_code_above_init_runs_everywhere_and_prints_are_prefixed(mode, tmp_path):
    proc = run(mode, "spmd.py", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = os.listdir(tmp_path)
    above = [n for n in names if n.startswith("above-")]
    below = [n for n in names if n.startswith("below-")]
    # spawned workers run no user script: only the driver runs the code above init()
    assert len(above) == (4 if mode == "mpi" else 1)
    assert len(below) == 1  # only the driver gets past init()
    lines = proc.stdout.splitlines()
    # Each process writes whole lines, but the driver (unbuffered here) and the workers write to one
    # pipe at once, so a worker's line may land in the middle of a driver line: match the prefix
    # right before the text, not at the start of the line.
    for i in range(6):
        hits = [l for l in lines if l.endswith(f"hello-from-task-{i}")]
        assert len(hits) == 1, proc.stdout
        assert re.search(r"\(say pid=\d+, rank=\d+\) hello-from-task-\d$", hits[0]), hits[0]
    assert sum(1 for l in lines if l.endswith("partial line without newline")) == 6
    assert "driver line is not prefixed" in proc.stdout
    assert not re.search(r"rank=\d+\) driver line", proc.stdout)
    if mode != "single":
        assert "TASK_RANKS [1, 2, 3]" in proc.stdout


@pytest.mark.parametrize("mode", MODES)
def test_processes_forked_by_an_actor_end_with_the_job(mode):
    proc = run(mode, "forked_children.py", "exit")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"POOL_PIDS ([\d ]+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    pool = [int(p) for p in match.group(1).split()]
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pool) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pool), f"pool processes {pool} outlived the job"


@pytest.mark.parametrize("mode", MODES)
def test_log_dir_gets_a_file_per_rank_with_its_tasks_output(mode, tmp_path):
    logs = tmp_path / "logs"
    proc = run(mode, "spmd.py", str(tmp_path), env={"HPCRAY_LOG_DIR": str(logs), "HPCRAY_LOG_LEVEL": "INFO"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    files = {int(re.match(r"rank(\d+)-pid\d+\.log$", name).group(1)): (logs / name).read_text()
             for name in os.listdir(logs)}
    assert sorted(files) == ([0] if mode == "single" else list(range(MPI_RANKS if mode == "mpi" else 4))), files
    for i in range(6):  # each task's line, in the file of the rank that ran it, prefixed
        holders = [r for r, text in files.items() if re.search(rf"\(say pid=\d+, rank={r}\) hello-from-task-{i}$",
                                                               text, re.M)]
        assert len(holders) == 1, files
    if mode != "mpi":  # the driver's own hpcray log (under mpiexec it logs nothing at INFO here)
        assert re.search(r"rank 0 INFO hpcray: ", files[0]), files[0]


def test_log_dir_that_cannot_be_written_is_an_error_at_init(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run("single", "spmd.py", str(tmp_path), env={"HPCRAY_LOG_DIR": str(blocker / "logs")})
    assert proc.returncode != 0 and "HPCRAY_LOG_DIR=" in proc.stderr, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_hpcray_timeline_writes_the_trace_when_the_driver_ends_by_an_error(mode, tmp_path):
    path = tmp_path / "trace.json"
    proc = run(mode, "exit_status.py", "raise", env={"HPCRAY_TIMELINE": str(path)})
    assert proc.returncode == 1 and "driver failed on purpose" in proc.stderr, proc.stdout + proc.stderr
    trace = json.loads(path.read_text())
    ran = [e for e in trace if e["ph"] == "X" and e["name"] == "pid"]
    assert len(ran) == 12, trace  # the script's 12 tasks named pid
    assert {e["pid"] for e in ran} <= {0, 1, 2, 3}, ran


@pytest.mark.parametrize("mode", MODES)
def test_shutdown_then_init_again(mode):
    proc = run(mode, "reinit.py")
    assert proc.returncode == 0 and "REINIT_OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_idle_ranks_do_not_busy_wait(mode):
    proc = run(mode, "idle_cpu.py", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    figures = [float(x) for x in re.findall(r"percent=([\d.]+)", proc.stdout)]
    assert figures, proc.stdout
    # a busy-waiting rank burns ~100% of a core; an idle one a few %. The bound is loose on purpose.
    assert max(figures) < 35, proc.stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("suppress", [False, True])
def test_unhandled_errors_are_reported_once(mode, suppress):
    env = {"RAY_IGNORE_UNHANDLED_ERRORS": "1"} if suppress else {"RAY_IGNORE_UNHANDLED_ERRORS": "0"}
    proc = run(mode, "unhandled.py", env=env)
    assert proc.returncode == 0 and "UNHANDLED_DONE" in proc.stdout, proc.stdout + proc.stderr
    reports = [line for line in proc.stderr.splitlines() if line.startswith("Unhandled error")]
    if suppress:
        assert reports == [], proc.stderr
    else:
        assert len(reports) == 1 and "boom-dropped" in proc.stderr, proc.stderr
    assert "boom-handled" not in proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_timeline_events_setting_reaches_every_rank_per_session(mode):
    proc = run(mode, "timeline_events.py")
    assert proc.returncode == 0 and "TIMELINE_EVENTS_OK" in proc.stdout, proc.stdout + proc.stderr


def test_timeline_path_with_recording_off_is_an_error_at_init(tmp_path):
    proc = run("single", "exit_status.py", "raise",
               env={"HPCRAY_TIMELINE": str(tmp_path / "t.json"), "HPCRAY_TIMELINE_EVENTS": "0"})
    assert proc.returncode == 1 and "HPCRAY_TIMELINE_EVENTS=0" in proc.stderr, proc.stdout + proc.stderr
    assert "driver failed on purpose" not in proc.stderr, proc.stderr  # init() itself refused


@pytest.mark.parametrize("mode", ["mpi", "spawn"])  # (one process has one rank: no index to use)
def test_a_job_of_many_ranks_places_through_the_room_index(mode):
    workers = INDEX_RANKS + 2
    if mode == "mpi":
        proc = run_mpi([os.path.join(SCENARIOS, "many_ranks.py")], ranks=workers + 1, timeout=180)
    else:
        proc = run("spawn", "many_ranks.py", timeout=180, env={"HPCRAY_SPAWN_WORKERS": str(workers)})
    assert proc.returncode == 0 and f"MANY_RANKS_OK {workers}" in proc.stdout, proc.stdout + proc.stderr
