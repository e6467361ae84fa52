"""Every example runs in every launch mode (they are also smoke tests)."""

import os

import pytest

from conftest import run_mpi, run_single, run_spawn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
NAMES = sorted(n for n in os.listdir(EXAMPLES) if n.endswith(".py"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", ["single", "mpi", "spawn"])
def test_example_runs(name, mode):
    path = os.path.join(EXAMPLES, name)
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    proc = run([path], timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
