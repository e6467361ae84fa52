"""Worker ranks spawned by init() for a driver that runs alone (``python app.py``): the same
runtime over a communicator of the driver and its workers. Every case module also runs in this
mode (test_cases.test_spawn) and so do the scenarios of test_lifecycle, test_failures, test_loop;
here is what is particular to it."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import BASE_ENV, SPAWN_ENV, alive, run_mpi, run_single, run_spawn
from test_lifecycle import SCENARIOS

SCRIPT = os.path.join(SCENARIOS, "spawned.py")


def shm_files():
    return set(os.listdir("/dev/shm"))


def test_cpu_bound_tasks_run_in_several_processes_at_once():
    proc = run_spawn([SCRIPT, "parallel"], timeout=90)
    assert proc.returncode == 0 and "PARALLEL_OK" in proc.stdout, proc.stdout + proc.stderr


def test_init_num_cpus_is_the_number_of_workers():
    proc = run_single([SCRIPT, "count", "2"], timeout=90, env={"HPCRAY_SPAWN": "auto", "HPCRAY_SPAWN_WORKERS": ""})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "CPUS 2 RANKS [1, 2]" in proc.stdout, proc.stdout + proc.stderr


def test_a_module_next_to_the_script_imports_on_the_workers(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / "helper_next_to_script.py").write_text("def answer():\n    return 42\n")
    (app / "main.py").write_text(textwrap.dedent("""
        import os
        import hpcray as ray
        import helper_next_to_script

        ray.init()

        @ray.remote
        def use_helper():
            return helper_next_to_script.answer(), os.getpid()

        value, pid = ray.get(use_helper.remote())
        assert value == 42 and pid != os.getpid(), (value, pid)
        print("IMPORT_OK", flush=True)
    """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_spawn([str(app / "main.py")], timeout=90, cwd=str(elsewhere))
    assert proc.returncode == 0 and "IMPORT_OK" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("user_setting", [None, "reloc"])
def test_single_host_jobs_load_mpi_without_ucx_memory_hooks_unless_the_user_says(user_setting):
    env = {"UCX_MEM_MMAP_HOOK_MODE": user_setting} if user_setting else {}
    proc = run_spawn([SCRIPT, "ucx"], timeout=90, env=env)
    expected = user_setting or "none"
    assert proc.returncode == 0 and f"UCX_HOOKS {expected} {expected}" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("launch", ["spawn", "mpi"])
def test_workers_import_numpy_only_for_arrays_and_asyncio_only_for_async_code(launch):
    proc = (run_spawn if launch == "spawn" else run_mpi)([SCRIPT, "numpy"], timeout=90)
    assert proc.returncode == 0 and "NUMPY_LAZY_OK" in proc.stdout, proc.stdout + proc.stderr
    # spawned workers see the driver's GPUs: only the driver asks NVML
    assert f"WORKERS_LOADED_NVML {launch == 'mpi'}" in proc.stdout, proc.stdout + proc.stderr


def kill_driver_once_it_says(script, label):
    """Start ``script linger``, read the pids it prints after ``label``, SIGKILL it; the pids."""
    env = dict(BASE_ENV, **SPAWN_ENV, PYTHONUNBUFFERED="1")
    driver = subprocess.Popen([sys.executable, script, "linger"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while label not in line and time.monotonic() < deadline:
            line = driver.stdout.readline()
            if not line and driver.poll() is not None:
                break
        match = re.search(label + r" ([\d ]+)", line)
        assert match, line + driver.stderr.read()
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        return [int(p) for p in match.group(1).split()]
    finally:
        if driver.poll() is None:
            driver.kill()


def wait_gone(pids, within_s=10):
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not any(alive(p) for p in pids)


def test_no_worker_outlives_a_killed_driver():
    before = shm_files()
    workers = kill_driver_once_it_says(SCRIPT, "WORKER_PIDS")
    assert wait_gone(workers), "a spawned worker outlived the killed driver"
    deadline = time.monotonic() + 5
    while not shm_files() <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


def test_no_process_forked_by_an_actor_outlives_a_killed_driver():
    pool = kill_driver_once_it_says(os.path.join(SCENARIOS, "forked_children.py"), "POOL_PIDS")
    assert wait_gone(pool), f"pool processes {pool} outlived the killed driver"


def test_workers_that_end_before_joining_end_the_program_with_a_message():
    """MPI_Comm_spawn itself would wait forever, spinning a core."""
    before = shm_files()
    started = time.monotonic()
    proc = run_spawn([SCRIPT, "broken"], timeout=90)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "NOT_REACHED" not in proc.stdout, output
    assert "WORKER CANNOT START" in proc.stderr, output
    assert "spawned worker rank(s) ended before joining the driver" in proc.stderr, output
    assert elapsed < 30, f"took {elapsed:.1f} s\n{output}"
    assert shm_files() <= before, f"left in /dev/shm: {shm_files() - before}"


def test_threads_are_the_fallback_where_spawning_cannot_work():
    proc = run_single([SCRIPT, "where"], timeout=60, env={"HPCRAY_SPAWN": "auto", "SLURM_JOB_ID": "1"})
    assert proc.returncode == 0 and "TASKS_HERE" in proc.stdout, proc.stdout + proc.stderr
    assert "Slurm job" in proc.stderr and "srun" in proc.stderr, proc.stderr
    proc = run_single([SCRIPT, "where"], timeout=60, env={"HPCRAY_SPAWN": "1", "SLURM_JOB_ID": "1"})
    assert proc.returncode != 0 and "HPCRAY_SPAWN=1" in proc.stderr, proc.stdout + proc.stderr
    proc = run_single([SCRIPT, "where"], timeout=60, env={"HPCRAY_SPAWN": "0"})
    assert proc.returncode == 0 and "TASKS_HERE" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("setting", ["auto", "unset"])
def test_spawn_auto_spawns_where_it_can(setting):
    """auto is the default: a plain ``python app.py`` spawns its workers."""
    env = {"HPCRAY_SPAWN_WORKERS": "2", "HPCRAY_SPAWN": "auto" if setting == "auto" else ""}
    proc = run_single([SCRIPT, "where"], timeout=60, env=env)
    assert proc.returncode == 0 and "TASKS_ELSEWHERE" in proc.stdout, proc.stdout + proc.stderr


def test_process_liveness_without_proc_asks_the_kernel(monkeypatch):
    """Where there is no /proc (macOS), a live process must not look dead: the watchers would end
    the program at once."""
    from hpcray._private import spawn
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    monkeypatch.setattr(spawn.os.path, "isdir", lambda path: False if path == "/proc" else os.path.isdir(path))
    assert spawn.process_alive(os.getpid())
    assert not spawn.process_alive(child.pid)  # (reaped: gone)


def test_the_spawn_watch_relies_on_its_timeout_where_it_cannot_see_processes(monkeypatch):
    from hpcray._private import spawn
    monkeypatch.setattr(spawn, "process_table", lambda: {})
    watch = spawn.SpawnWatch.__new__(spawn.SpawnWatch)
    watch.earlier_children = set()
    launched, workers, visible = watch._launched()
    assert (launched, workers, visible) == ([], 0, False)
