"""Large copies cut into pieces that a few threads copy at once.

A large value is copied once on its way (``put``, a large return value or argument: into this
rank's arena segment, ``arena.SharedArena.store``), and one core copies well below what the
memory can do: on the development VM one thread copied 100 MB at 5.5-6.8 GB/s, two threads at
8.3-9.3 GB/s. numpy lets the GIL go while it copies, so ``Copier.copy`` cuts a large copy into one
contiguous piece per thread: the calling thread copies the first, helper threads the others,
and the caller returns once all are in. It waits for the helpers even when a cancel interrupts it
(a task's ``KeyboardInterrupt``): they write into a block the caller owns, which must not be
released under them. Ray's object store copies large objects with several threads too.

    Copier.copy(target, source) ── small, or one thread: np.copyto (memoryview assignment
                                │    where the process has not imported numpy)
                                └─ large: pieces 2..n ─► helper threads ─┐
                                          piece 1 ─► the caller ──────────┴─► wait for all

hpcray does not import numpy itself (it is a third of a worker's start-up): it uses it where the
process has it, and imports it for a copy large enough to be cut into pieces.
"""

from __future__ import annotations

import importlib
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, List, Optional

from .config import COPY_PIECE_MIN, COPY_THREADS_MAX


def default_threads() -> int:
    """Threads for one large copy when HPCRAY_COPY_THREADS does not say: the CPUs this process
    may run on (a rank bound to one core gets one), at most ``COPY_THREADS_MAX``."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        usable = os.cpu_count() or 1
    return max(1, min(COPY_THREADS_MAX, usable))


class Copier:
    """Copies for one process, with ``threads`` threads for a large one (1: always one)."""

    def __init__(self, threads: int = 1):
        self.threads = max(1, threads)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pid = 0  # the process that made the pool (a forked child has none of its threads)

    def copy(self, target: memoryview, source: Any) -> None:
        """Copy the bytes of ``source`` (a contiguous buffer) into ``target`` (a writable byte
        view of the same size)."""
        source = memoryview(source).cast("B")
        nbytes = source.nbytes
        pieces = min(self.threads, nbytes // COPY_PIECE_MIN)
        np = sys.modules.get("numpy")
        if pieces <= 1 and np is None:
            target[:] = source
            return
        if np is None:
            np = importlib.import_module("numpy")
        target, source = np.frombuffer(target, dtype=np.uint8), np.frombuffer(source, dtype=np.uint8)
        if pieces <= 1:
            copy_piece(target, source)
            return
        step = -(-nbytes // pieces)
        step += -step % 4096  # pieces start on page boundaries
        pool = self._helpers()
        helped: List[Future] = [pool.submit(copy_piece, target[start:start + step], source[start:start + step])
                                for start in range(step, nbytes, step)]
        try:
            copy_piece(target[:step], source[:step])
        finally:
            _wait_all(helped)

    def _helpers(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pid != os.getpid():
            self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="hpcray-copy")
            self._pid = os.getpid()
        return self._pool

    def close(self) -> None:
        """The arena is going away: let the helper threads end (none is copying: every copy
        waits for its pieces)."""
        if self._pool is not None and self._pid == os.getpid():
            self._pool.shutdown(wait=False)
        self._pool = None


def copy_piece(target: Any, source: Any) -> None:
    """Copy one numpy byte array into another; numpy lets the GIL go while it copies."""
    sys.modules["numpy"].copyto(target, source)


def _wait_all(helped: List[Future]) -> None:
    """Wait until every piece is copied, through interrupts; then raise the first failure or
    interrupt, if any."""
    error: Optional[BaseException] = None
    for future in helped:
        while True:
            try:
                future.result()
                break
            except BaseException as exc:  # the helper's failure, or a cancel landing in the caller
                error = error or exc
                if future.done():
                    break
    if error is not None:
        raise error
