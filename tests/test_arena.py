"""The arena's fallbacks (tests/scenarios/arena_fallback.py), in both launch modes."""

import os

import pytest

from conftest import run_mpi, run_single

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", "arena_fallback.py")
NOTICE = "no node-shared object arena on this host"


@pytest.mark.parametrize("launch", ["single", "mpi"])
@pytest.mark.parametrize("mode", ["tiny-shm", "full"])
def test_arena_fallback(mode, launch):
    run = run_single if launch == "single" else (lambda args, **kw: run_mpi(args, ranks=3, **kw))
    proc = run([SCRIPT, mode], timeout=180)
    assert proc.returncode == 0 and "FALLBACK_OK" in proc.stdout, proc.stdout + proc.stderr
    if launch == "mpi":
        assert ("FALLBACK_OK arena" in proc.stdout) == (mode == "full"), proc.stdout
    expected = 1 if (mode, launch) == ("tiny-shm", "mpi") else 0  # said once, by the host's first rank
    assert proc.stderr.count(NOTICE) == expected, proc.stderr


def test_segment_allocator_reuses_and_coalesces_free_space():
    from hpcray._private.arena import ALIGN, SegmentAllocator
    allocator = SegmentAllocator(10 * ALIGN)
    a, b, c = (allocator.allocate(2 * ALIGN) for _ in range(3))
    assert (a, b, c) == (0, 2 * ALIGN, 4 * ALIGN)
    assert allocator.allocate(5 * ALIGN) is None  # only 4 blocks' worth left: full is None, not an error
    allocator.release(a)
    allocator.release(b)
    assert allocator.used_bytes() == 2 * ALIGN
    assert allocator.allocate(4 * ALIGN) == 0  # a and b merged into one run
    allocator.release(c)
    allocator.release(0)
    assert allocator.used_bytes() == 0 and allocator.free == [(0, 10 * ALIGN)]
    assert allocator.allocate(1) == 0 and allocator.blocks[0] == ALIGN  # rounded up to the alignment


def test_segment_size_follows_dev_shm(tmp_path):
    from hpcray._private.arena import MIN_SEGMENT, segment_bytes
    size, why = segment_bytes(None, 4, str(tmp_path))
    assert (size == 0) == bool(why)
    assert size == 0 or MIN_SEGMENT <= size <= 2 << 30
    assert segment_bytes(0, 4, str(tmp_path)) == (0, "HPCRAY_ARENA_BYTES=0")
    size, why = segment_bytes(None, 1, str(tmp_path / "missing"))
    assert size == 0 and "not usable" in why


@pytest.mark.parametrize("launch", ["single", "mpi"])
@pytest.mark.parametrize("name,value", [("HPCRAY_REMOTE_FETCH", "rma"), ("HPCRAY_ARENA_BYTES", "-1"),
                                        ("HPCRAY_ARENA_BYTES", "1.5"), ("HPCRAY_COPY_THREADS", "0"),
                                        ("HPCRAY_COPY_THREADS", "two")])
def test_bad_arena_settings_are_an_error_naming_the_variable(name, value, launch):
    code = "import hpcray; hpcray.init()"
    env = {name: value}
    proc = run_single(["-c", code], timeout=60, env=env) if launch == "single" else \
        run_mpi(["-c", code], ranks=2, timeout=60, env=env)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert f"{name}={value!r}" in proc.stderr and "ValueError" in proc.stderr, proc.stderr
