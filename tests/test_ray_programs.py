"""``python -m hpcray app.py``: a Ray program runs unchanged (``import ray`` is hpcray's, on every
rank), in every launch mode; an installed Ray is not touched."""

import os
import re

import pytest

from conftest import run_mpi, run_single, run_spawn
from test_lifecycle import MODES, SCENARIOS

PROGRAM = os.path.join(SCENARIOS, "ray_program.py")


@pytest.mark.parametrize("mode", MODES)
def test_a_ray_program_runs_unchanged(mode):
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    proc = run(["-m", "hpcray", PROGRAM, "--flag", "value"], timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "OK" in proc.stdout.splitlines(), output
    assert "ARGS ['--flag', 'value']" in proc.stdout, output
    assert "RAY_IS hpcray True" in proc.stdout, output
    helper = re.search(r"HELPER \('hpcray', (\d+)\)", proc.stdout)
    assert helper, output
    if mode != "single":  # the task ran on a worker rank, which resolved `import ray` too
        assert int(helper.group(1)) > 0, output


def test_version_help_and_a_missing_file():
    assert run_single(["-m", "hpcray", "--version"]).stdout.startswith("hpcray ")
    assert "python -m hpcray" in run_single(["-m", "hpcray", "--help"]).stdout
    missing = run_single(["-m", "hpcray", "no-such-program.py"])
    assert missing.returncode == 2 and "no-such-program.py" in missing.stderr


@pytest.mark.parametrize("mode", MODES)
def test_get_runtime_context_before_init_starts_hpcray(mode):
    """As on Ray: asking for the runtime context first initializes."""
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    code = ("import hpcray as ray\nctx = ray.get_runtime_context()\n"
            "print('STARTED', ray.is_initialized(), len(ctx.get_job_id()) > 0, sorted(ctx.get()))")
    proc = run(["-c", code], timeout=120)
    assert "STARTED True True ['job_id', 'namespace', 'node_id']" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_init_amounts_are_the_jobs_totals_in_every_mode(mode):
    """A program that asks init() for CPUs, GPUs (pretend ones here) and custom resources gets
    them in every launch mode, instead of waiting for ever under MPI."""
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    proc = run([os.path.join(SCENARIOS, "init_amounts.py")], timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "TOTAL 3.0 2.0 3.0 0.5" in proc.stdout, output
    assert "GPU_TASKS [1, 1, 1, 1]" in proc.stdout, output


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hook", ["function", "string", "broken"])
def test_worker_process_setup_hook(mode, hook):
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    proc = run([os.path.join(SCENARIOS, "setup_hook.py"), hook], timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    if hook == "broken":
        assert "SETUP_ERROR True" in proc.stdout, output
    else:
        assert "EVERY_PROCESS_RAN_IT True" in proc.stdout, output
    assert "BAD_HOOK True" in proc.stdout, output
