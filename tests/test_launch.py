"""A launch that would run the program several times over is an error, never silent duplication:
the launcher says it started N copies, MPI gives each a world of 1 (a PMI mismatch, or MPI turned
off). The Slurm forms of it run on a real Slurm in test_slurm.py."""

import os
import subprocess
import sys

import pytest

import openmpi
from conftest import mpiexec

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROGRAM = "import hpcray\nhpcray.init()\nprint('THE PROGRAM RAN', flush=True)\n"


def launch(command, tmp_path, env=None):
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    full_env = dict(os.environ, **openmpi.ENV)  # with PYTHONPATH: this checkout
    full_env.pop("HPCRAY_SPAWN", None)
    full_env.update(env or {})
    return subprocess.run(command + [str(script)], capture_output=True, text=True, timeout=120, env=full_env)


def test_mpi_turned_off_under_a_launcher_of_two_is_an_error(tmp_path):
    proc = launch([mpiexec(), "-n", "2", sys.executable], tmp_path, env={"HPCRAY_MPI": "0"})
    assert proc.returncode != 0
    assert "THE PROGRAM RAN" not in proc.stdout
    assert "the launcher started 2 copies of this program (PMI_SIZE=2)" in proc.stderr
    assert "HPCRAY_MPI=0" in proc.stderr


def test_an_mpi_that_does_not_speak_the_launchers_pmi_is_an_error(tmp_path):
    """Open MPI's mpi4py started by MPICH's mpiexec: each copy is a singleton of its own."""
    why = openmpi.ensure()
    if why:
        pytest.fail(f"the Open MPI environment could not be made: {why}")
    before = set(os.listdir("/dev/shm"))
    proc = launch([mpiexec(), "-n", "2", openmpi.PYTHON], tmp_path)
    assert proc.returncode != 0
    assert "THE PROGRAM RAN" not in proc.stdout
    assert "the launcher started 2 copies" in proc.stderr
    assert "Open MPI" in proc.stderr and "--mpi=pmix" in proc.stderr
    # each copy's Open MPI made a 16 MB segment its finalize would leave: removed at the refusal
    assert set(os.listdir("/dev/shm")) <= before, set(os.listdir("/dev/shm")) - before


def test_no_mpi_library_under_a_launcher_of_two_is_an_error(tmp_path):
    proc = launch([mpiexec(), "-n", "2", sys.executable], tmp_path,
                  env={"MPI4PY_LIBMPI": "/nonexistent/libmpi.so"})  # mpi4py then loads no MPI
    assert proc.returncode != 0
    assert "THE PROGRAM RAN" not in proc.stdout
    assert "the launcher started 2 copies of this program (PMI_SIZE=2)" in proc.stderr
    assert "mpi4py cannot load an MPI library" in proc.stderr


def test_one_copy_from_a_launcher_runs(tmp_path):
    proc = launch([mpiexec(), "-n", "1", sys.executable], tmp_path, env={"HPCRAY_SPAWN": "0"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("THE PROGRAM RAN") == 1


@pytest.mark.parametrize("env,expected", [
    ({}, 1),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}, 1),  # the batch script itself
    ({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, 4),  # an srun step
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1", "PMI_SIZE": "1"}, 1),
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "PMI_SIZE": "1"}, 1),  # mpiexec -n 1 in an allocation
    ({"OMPI_COMM_WORLD_SIZE": "3"}, 3),
    ({"MPI_LOCALNRANKS": "2"}, 2),
])
def test_the_launchers_count_of_copies(monkeypatch, env, expected):
    from hpcray._private.launchers import launcher_tasks
    for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_ID", "SLURM_STEP_NUM_TASKS", "PMI_SIZE",
                 "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    count, evidence = launcher_tasks()
    assert count == expected
    assert (evidence.split("=")[1] == str(expected)) if expected > 1 else evidence == ""


@pytest.mark.parametrize("env,expected", [
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4"}, True),  # srun --mpi=none
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMI_FD": "5", "PMI_SIZE": "4"}, False),  # pmi2
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "PMIX_RANK": "0"}, False),  # pmix
    ({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, False),
    ({"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}, False),  # the batch script
])
def test_an_srun_step_without_a_process_manager_is_known_before_mpi_starts(monkeypatch, env, expected):
    from hpcray._private.launchers import no_process_manager
    for name in list(os.environ):
        if name.startswith(("SLURM_", "PMI_", "PMIX_", "OMPI_", "MPI_LOCAL")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert no_process_manager() is expected
