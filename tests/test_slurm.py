"""hpcray on a real Slurm (tests/slurm_cluster.py: one node, 16 CPUs, 4 fake GPUs), jobs submitted
with ``sbatch slurm/job.sbatch`` as a user would: the examples complete, CPUs and GPUs map from
``--cpus-per-task``, ``--gres=gpu:N`` and ``--gpus-per-task``, a failing driver's exit code reaches
``sacct``, ``scancel`` and ``--time`` end every rank cleanly, and a PMI mismatch fails loudly.

Every job is submitted at once (a module fixture), so they run side by side; each test waits for
its own. The job that waits for its time limit takes a minute or more (Slurm's limits are whole
minutes), the rest run while it waits.
"""

import json
import os
import re
import sys
import time

import pytest

import openmpi
import slurm_cluster
from conftest import BASE_ENV, alive

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SBATCH = os.path.join(ROOT, "slurm", "job.sbatch")
SCENARIOS = os.path.join(HERE, "scenarios")
EXAMPLES = os.path.join(ROOT, "examples")
KILL_WAIT_S = 5  # the test cluster's KillWait: SIGTERM, then SIGKILL this much later
RAN = "import hpcray\nhpcray.init()\nprint('THE PROGRAM RAN', flush=True)\n"

#: name -> (sbatch flags, program and its arguments, environment); the long ones first
JOBS = {
    "time_limit": (["--time=1", "--ntasks-per-node=3"], [os.path.join(SCENARIOS, "exit_status.py"), "killed"], {}),
    "scancel": (["--ntasks-per-node=3"], [os.path.join(SCENARIOS, "exit_status.py"), "killed"], {}),
    "quickstart": ([], [os.path.join(EXAMPLES, "quickstart.py")], {}),
    "actors": ([], [os.path.join(EXAMPLES, "actors.py")], {}),
    "monte_carlo_pi": ([], [os.path.join(EXAMPLES, "monte_carlo_pi.py")], {}),
    "collective_allreduce": ([], [os.path.join(EXAMPLES, "collective_allreduce.py")], {}),
    "recursive_fib": ([], [os.path.join(EXAMPLES, "recursive_fib.py")], {}),
    "ray_program": ([], ["-m", "hpcray", os.path.join(SCENARIOS, "ray_program.py")], {}),
    "gres": (["--ntasks-per-node=3", "--cpus-per-task=2", "--gres=gpu:4"],
             [os.path.join(SCENARIOS, "gpus.py"), "plain"], {}),
    "gpus_per_task": (["--ntasks-per-node=3", "--gpus-per-task=1"], [os.path.join(SCENARIOS, "gpus.py"), "plain"],
                      {}),
    "fails": (["--ntasks-per-node=2"], [os.path.join(SCENARIOS, "exit_status.py"), "sysexit"], {}),
    "pmi_none": (["--ntasks-per-node=2"], ["RAN"], {"HPCRAY_SRUN_MPI": "none"}),
    "openmpi_under_pmi2": (["--ntasks-per-node=2"], ["RAN"], {"HPCRAY_SRUN_MPI": "pmi2",
                                                              "HPCRAY_PYTHON": openmpi.PYTHON}),
}


class Job:
    def __init__(self, cluster, name, job_id, output):
        self.cluster, self.name, self.id, self.output = cluster, name, job_id, output

    def text(self) -> str:
        try:
            with open(self.output, errors="replace") as source:
                return source.read()
        except FileNotFoundError:
            return ""

    def end(self, timeout_s=240):
        state, code = self.cluster.wait(self.id, timeout_s)
        return state, code, self.text()

    def wait_for_output(self, marker, timeout_s=180):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker in self.text():
                return
            if (self.cluster.state(self.id) or ("",))[0] in slurm_cluster.ENDED:
                break
            time.sleep(0.2)
        pytest.fail(f"job {self.name} never printed {marker!r}:\n{self.text()}")


def processes_of(job_id: str):
    """Pids of the processes that run for a Slurm job (by SLURM_JOB_ID in their environment)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as source:
                environ = source.read().split(b"\0")
        except OSError:
            continue
        if f"SLURM_JOB_ID={job_id}".encode() in environ and alive(int(entry)):
            pids.append(int(entry))
    return pids


def shared_memory():
    """hpcray's segments and MPICH's in /dev/shm (a rank killed before MPI_Finalize leaves MPICH's)."""
    return {name for name in os.listdir("/dev/shm") if name.startswith(("hpcray-", "mpich_shm_"))}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_cluster.why_not()
    if why:
        pytest.skip(f"no Slurm on this machine: {why}")
    root = tmp_path_factory.mktemp("slurm")
    os.chmod(root, 0o755)
    running = slurm_cluster.SlurmCluster(str(root))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shm_before(cluster):
    return shared_memory()


@pytest.fixture(scope="module")
def jobs(cluster, shm_before, tmp_path_factory):
    why = openmpi.ensure()
    assert not why, f"the Open MPI environment could not be made: {why}"
    workdir = tmp_path_factory.mktemp("jobs")
    os.chmod(workdir, 0o755)
    ran = workdir / "ran.py"
    ran.write_text(RAN)
    base = dict(BASE_ENV, HPCRAY_PYTHON=sys.executable, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    base.pop("HPCRAY_SPAWN", None)
    submitted = {}
    for name, (flags, program, env) in JOBS.items():
        output = str(workdir / f"{name}-%j.out")
        program = [str(ran) if part == "RAN" else part for part in program]
        job_id = cluster.submit(SBATCH, f"--job-name={name}", f"--output={output}", f"--chdir={workdir}", *flags,
                                env=dict(base, **env), args=program)
        submitted[name] = Job(cluster, name, job_id, output.replace("%j", job_id))
    return submitted


def assert_clean(text):
    for noise in ("Traceback", "Exception ignored", "UCX  WARN", "Error in atexit"):
        assert noise not in text, text


def assert_ended_in_time(job, signalled_at):
    deadline = signalled_at + KILL_WAIT_S + 5
    while processes_of(job.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_of(job.id)
    assert not left, f"processes of job {job.name} outlived Slurm's kill wait: {left}\n{job.text()}"
    return time.monotonic() - signalled_at


def test_scancel_ends_every_rank_cleanly(jobs):
    job = jobs["scancel"]
    job.wait_for_output("RUNNING")
    workers = [int(p) for p in re.search(r"WORKER_PIDS ([\d ]+)", job.text()).group(1).split()]
    assert len(workers) == 2
    job.cluster.cancel(job.id)
    took = assert_ended_in_time(job, time.monotonic())
    state, _, text = job.end()
    assert state == "CANCELLED", text
    assert_clean(text)
    print(f"scancel: every process of the job ended {took:.1f} s after it")


def test_the_examples_complete_as_shipped(jobs):
    expected = {"quickstart": "sum of squares = 328350", "actors": "", "monte_carlo_pi": "pi ~ 3.1",
                "collective_allreduce": "trainers (mpi allreduce)", "recursive_fib": "fib(15) = 610"}
    for name, marker in expected.items():
        state, code, text = jobs[name].end()
        assert (state, code) == ("COMPLETED", "0:0"), f"{name}:\n{text}"
        assert marker in text, f"{name}:\n{text}"
        assert_clean(text)


def test_a_ray_program_runs_unchanged(jobs):
    state, code, text = jobs["ray_program"].end()
    assert (state, code) == ("COMPLETED", "0:0"), text
    assert re.search(r"^OK$", text, re.M), text


def gpu_view(job):
    state, code, text = job.end()
    assert (state, code) == ("COMPLETED", "0:0"), text
    line = next(line for line in text.splitlines() if line.startswith("GPUS "))
    return json.loads(line[len("GPUS "):]), text


def test_cpus_per_task_and_a_nodes_gpus_shared_out(jobs):
    view, text = gpu_view(jobs["gres"])
    assert view["cpus"] == 4.0, text  # 2 worker ranks x --cpus-per-task=2
    assert view["total"] == 4, text  # all 4 GPUs of --gres=gpu:4 used, 2 per worker rank
    ids = sorted(gpu for _, owned, _ in view["held"] for gpu in owned)
    assert ids == [0, 1, 2, 3], view
    assert sorted(rank for rank, _, _ in view["held"]) == [1, 1, 2, 2], view
    for _, owned, visible in view["held"]:
        assert visible == str(owned[0])
    assert view["no_gpu"] == [[], ""] and view["no_gpu_actor"] == [[], ""]


def test_gpus_per_task_keeps_each_ranks_own_gpu(jobs):
    view, text = gpu_view(jobs["gpus_per_task"])
    assert view["cpus"] == 2.0 and view["total"] == 2, text
    # Slurm bound GPU 0 to the driver's task, 1 and 2 to the worker ranks' tasks
    assert sorted((rank, owned) for rank, owned, _ in view["held"]) == [(1, [1]), (2, [2])], view


def test_a_failing_drivers_exit_code_reaches_sacct(jobs):
    state, code, text = jobs["fails"].end()
    assert (state, code) == ("FAILED", "3:0"), text


@pytest.mark.parametrize("name,evidence,why", [
    ("pmi_none", "SLURM_STEP_NUM_TASKS=2", "srun gave them no process-management interface for MPI"),
    ("openmpi_under_pmi2", "PMI_SIZE=2", "The MPI library mpi4py loaded (Open MPI")])
def test_a_pmi_mismatch_fails_loudly(jobs, name, evidence, why):
    state, _, text = jobs[name].end()
    assert state == "FAILED", text
    assert "THE PROGRAM RAN" not in text
    assert f"the launcher started 2 copies of this program ({evidence})" in text, text
    assert why in text, text


def test_a_time_limit_ends_every_rank_cleanly(jobs):
    job = jobs["time_limit"]
    job.wait_for_output("RUNNING")
    while job.cluster.squeue_state(job.id) == "RUNNING":  # until Slurm begins ending it
        time.sleep(0.2)
    took = assert_ended_in_time(job, time.monotonic())
    state, _, text = job.end()
    assert state == "TIMEOUT", text
    assert "DUE TO TIME LIMIT" in text, text
    assert_clean(text.replace("error: *** JOB", "").replace("error: *** STEP", ""))
    print(f"time limit: every process of the job ended {took:.1f} s after Slurm began ending it")


def test_no_job_left_shared_memory_behind(jobs, shm_before):
    """Last: every job has ended by now (each test above waited for its own)."""
    for job in jobs.values():
        job.end()
    left = shared_memory() - shm_before
    assert not left, f"left in /dev/shm by the jobs: {sorted(left)}"
