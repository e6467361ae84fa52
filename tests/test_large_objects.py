"""Objects larger than 2 GiB, in both launch modes (slow: about 30 s under MPI here)."""

import os

import pytest

from conftest import run_mpi, run_single

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", "huge_object.py")


def enough_memory(gib: float) -> bool:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") > gib * (1 << 30)
    except (ValueError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not enough_memory(12), reason="needs about 12 GiB of free memory")
@pytest.mark.parametrize("mode", ["single", "mpi"])
def test_object_over_2_gib_round_trip(mode):
    proc = run_single([SCRIPT], timeout=300) if mode == "single" else run_mpi([SCRIPT], ranks=3, timeout=300)
    assert proc.returncode == 0 and "HUGE_OK" in proc.stdout, proc.stdout + proc.stderr
