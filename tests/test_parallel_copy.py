"""Large copies by several threads (parallel_copy.py): every byte lands in place, a small copy
stays on the calling thread, and the caller never returns while a helper still writes."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from hpcray._private import parallel_copy
from hpcray._private.config import COPY_PIECE_MIN
from hpcray._private.parallel_copy import Copier, default_threads


def random_bytes(nbytes):
    return np.random.default_rng(nbytes).integers(0, 256, size=nbytes, dtype=np.uint8)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("nbytes", [0, 1000, 2 * COPY_PIECE_MIN, 3 * COPY_PIECE_MIN + 12345])
def test_every_byte_lands_in_place(threads, nbytes):
    source = random_bytes(nbytes)
    target = np.zeros(nbytes, dtype=np.uint8)
    copier = Copier(threads)
    try:
        copier.copy(target, source)
    finally:
        copier.close()
    assert np.array_equal(target, source)


def test_a_copy_below_two_pieces_uses_no_helper_thread():
    copier = Copier(4)
    source = random_bytes(2 * COPY_PIECE_MIN - 1)
    target = np.empty_like(source)
    copier.copy(target, source)
    assert copier._pool is None and np.array_equal(target, source)
    copier.copy(np.empty(2 * COPY_PIECE_MIN, np.uint8), random_bytes(2 * COPY_PIECE_MIN))
    assert copier._pool is not None
    copier.close()


class SlowHelpers:
    """Stands in for numpy's copy in parallel_copy: the calling thread's piece raises (as a cancel's
    KeyboardInterrupt would), the helpers' pieces take a while and are recorded."""

    def __init__(self, caller):
        self.caller = caller
        self.finished = []

    def copyto(self, target, source):
        if threading.get_ident() == self.caller:
            raise KeyboardInterrupt
        time.sleep(0.3)
        np.copyto(target, source)
        self.finished.append(time.monotonic())


def test_an_interrupted_caller_waits_for_its_helpers(monkeypatch):
    fake = SlowHelpers(threading.get_ident())
    monkeypatch.setattr(parallel_copy, "copy_piece", fake.copyto)
    copier = Copier(3)
    source = random_bytes(3 * COPY_PIECE_MIN)
    target = np.zeros_like(source)
    with pytest.raises(KeyboardInterrupt):
        copier.copy(target, source)
    raised = time.monotonic()
    assert len(fake.finished) == 2 and max(fake.finished) <= raised  # both helpers were done first
    assert np.array_equal(target[COPY_PIECE_MIN:], source[COPY_PIECE_MIN:])
    copier.close()


def test_a_helpers_failure_reaches_the_caller(monkeypatch):
    class Failing:
        @staticmethod
        def copyto(target, source):
            if threading.current_thread().name.startswith("hpcray-copy"):
                raise MemoryError("helper")
            np.copyto(target, source)
    monkeypatch.setattr(parallel_copy, "copy_piece", Failing.copyto)
    copier = Copier(2)
    with pytest.raises(MemoryError, match="helper"):
        copier.copy(np.empty(2 * COPY_PIECE_MIN, np.uint8), random_bytes(2 * COPY_PIECE_MIN))
    copier.close()


def test_a_forked_child_copies_with_helpers_of_its_own():
    copier = Copier(2)
    source = random_bytes(2 * COPY_PIECE_MIN)
    copier.copy(np.empty_like(source), source)  # the parent's helpers exist now
    pid = os.fork()
    if pid == 0:  # the child: the parent's helper threads are not here
        ok = False
        try:
            target = np.zeros_like(source)
            copier.copy(target, source)
            ok = bool(np.array_equal(target, source))
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's copy hung (it waited for the parent's helper threads)")
    copier.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_default_follows_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_threads() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert default_threads() == parallel_copy.COPY_THREADS_MAX


def test_a_process_without_numpy_copies_without_it_until_a_copy_is_cut_into_pieces():
    script = textwrap.dedent(f"""
        import os, sys
        from hpcray._private.parallel_copy import Copier
        copier = Copier(2)
        small = os.urandom(1000)
        target = bytearray(len(small))
        copier.copy(memoryview(target), small)
        assert bytes(target) == small and "numpy" not in sys.modules
        large = os.urandom({2 * COPY_PIECE_MIN} + 4097)
        target = bytearray(len(large))
        copier.copy(memoryview(target), large)
        assert bytes(target) == large and "numpy" in sys.modules
        print("OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
