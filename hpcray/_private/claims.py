"""Queued tasks the scheduler can take back without the rank's help (one-sided atomics).

A worker rank holds a few tasks queued behind those it runs, so that short tasks do not each wait
for a scheduler round trip. To take one back for an idle rank, the scheduler asks (STEAL) and
waits for the answer (STOLEN); a rank stuck in a call that holds the GIL (a C extension, a long
regular expression) cannot answer, and its queued tasks used to wait for that call to end while
other ranks sat idle. So a queued task carries a *claim*: a word of a window that lives in rank
0's memory (its cell) and which use of that cell this is (u). Both sides raise the word with an
atomic fetch-and-max and look at what it held before:

    scheduler (rank 0)                          worker rank
    EXECUTE(spec, ..., (cell, u)) ────────────► before starting it: fetch-max(cell, 2u+1)
    take back: fetch-max(cell, 2u+2)               held less: run it; held 2u+2: taken back,
        held less than 2u+1: taken back,           drop it and say nothing
        placed elsewhere at once
        held 2u+1: it runs there

Exactly one side finds the word below 2u+1, and the word only grows, so a cell needs no reset
between uses (handing one out writes nothing). The window's memory is rank 0's: the scheduler's
operation is local, and the worker's needs no help from rank 0's threads where the MPI does
atomics in shared memory or the network.

A claim costs the worker a round trip to rank 0's memory before the task starts (a few µs here,
but MPI calls through mpi4py let the GIL go, and getting it back cost 5 ms whenever a task
thread ran Python: the call goes through ctypes with the GIL held). So only tasks queued behind
one that may run long get a claim: behind a task of a function whose last task did not end
within ``SHORT_TASK_S``, or that never ran (``Scheduler._behind_a_long_one``); the others are
asked back by message (STEAL), as before, and so are all tasks in a job without the window (one
process; Open MPI with ULFM, which has no windows) or on a rank whose ``CLAIM_CELLS`` cells are
all in use. A task of a function that ran short until now and then holds the GIL for long
still keeps the tasks queued behind it until it ends.
"""

from __future__ import annotations

import array
import ctypes
import logging
from typing import Any, Dict, List, Optional, Tuple

from .config import CLAIM_CELLS

logger = logging.getLogger("hpcray")


class ClaimBoard:
    """The window of claim cells: ``CLAIM_CELLS`` per worker rank, in rank 0's memory. Made
    collectively by every rank of the job (``open``); rank 0's scheduler hands out claims and
    takes tasks back, workers claim before they start a queued task."""

    def __init__(self, window: Any, rank: int, size: int):
        from mpi4py import MPI
        self.MPI = MPI
        self.window = window
        self.rank = rank
        self.free: Dict[int, List[int]] = {}
        self.uses: List[int] = [0] * ((size - 1) * CLAIM_CELLS) if rank == 0 else []  # per cell
        if rank == 0:
            self.reset()
        self._origin = array.array("q", [0])
        self._result = array.array("q", [0])
        self._fetch_and_max = _fetch_and_max_holding_the_gil(window, self._origin, self._result)

    @classmethod
    def open(cls, comm: Any) -> Optional["ClaimBoard"]:
        """Collective: the job's board, or None where the MPI gives no window (then STEAL only)."""
        from mpi4py import MPI
        rank, size = comm.Get_rank(), comm.Get_size()
        nbytes = (size - 1) * CLAIM_CELLS * 8 if rank == 0 else 0
        try:
            window = MPI.Win.Allocate(nbytes, 8, comm=comm)
        except MPI.Exception as exc:  # (every rank fails alike: the call is collective)
            logger.info("hpcray: no claim window (%s): queued tasks are only asked back", exc)
            return None
        if rank == 0:
            cells = memoryview(window.tomemory()).cast("B")
            cells[:] = bytes(len(cells))
        comm.Barrier()  # (the cells are zero before anyone raises one)
        window.Lock_all()
        return cls(window, rank, size)

    def close(self) -> None:
        """At the end of the job, on every rank (collective)."""
        window, self.window = self.window, None
        if window is not None:
            window.Unlock_all()
            window.Free()

    def _raise(self, cell: int, value: int) -> int:
        """Atomically raise the cell to at least ``value``; what it held before."""
        self._origin[0] = value
        if self._fetch_and_max is not None:
            self._fetch_and_max(cell)
            return int(self._result[0])
        MPI = self.MPI
        self.window.Fetch_and_op([self._origin, MPI.INT64_T], [self._result, MPI.INT64_T], 0, cell, MPI.MAX)
        self.window.Flush(0)
        return int(self._result[0])

    # ---- rank 0 ----------------------------------------------------------------------------
    def reset(self) -> None:
        """A new session: every cell is free (the workers dropped the last session's tasks; a
        cell's uses go on counting)."""
        ranks = len(self.uses) // CLAIM_CELLS
        self.free = {r: list(range((r - 1) * CLAIM_CELLS, r * CLAIM_CELLS)) for r in range(1, ranks + 1)}

    def hand_out(self, rank: int) -> Optional[Tuple[int, int]]:
        """A claim for a task queued on ``rank``: (cell, use), or None if no cell is free."""
        cells = self.free.get(rank)
        if not cells:
            return None
        cell = cells.pop()
        self.uses[cell] += 1
        return cell, self.uses[cell]

    def take_back(self, claim: Tuple[int, int]) -> bool:
        """Whether the task is taken back (the worker will not start it)."""
        cell, use = claim
        return self._raise(cell, 2 * use + 2) < 2 * use + 1

    def give_back(self, rank: int, claim: Tuple[int, int]) -> None:
        """The claim's task is done, or taken back: the cell may serve another."""
        cells = self.free.get(rank)
        if cells is not None:
            cells.append(claim[0])

    # ---- a worker rank ---------------------------------------------------------------------
    def claim(self, claim: Tuple[int, int]) -> bool:
        """Whether this rank may start the task (False: the scheduler took it back)."""
        cell, use = claim
        return self._raise(cell, 2 * use + 1) < 2 * use + 1


def _fetch_and_max_holding_the_gil(window: Any, origin: array.array, result: array.array) -> Any:
    """``MPI_Fetch_and_op(MAX)`` and ``MPI_Win_flush`` on rank 0's cells, called through
    ``ctypes.PyDLL`` (the GIL stays held): mpi4py lets the GIL go around each call, and getting it
    back waits for the switch interval (5 ms) whenever a task thread runs Python (measured here
    with one busy thread: 5,984 µs a claim through mpi4py, 29 µs this way). None where the MPI
    library's functions cannot be reached (then mpi4py's calls)."""
    from mpi4py import MPI
    try:
        library = ctypes.PyDLL(MPI.__file__)
        fetch_and_op, flush = library.MPI_Fetch_and_op, library.MPI_Win_flush
    except (OSError, AttributeError):
        return None
    # a handle is an int (MPICH) or a pointer (Open MPI): the size of mpi4py's tells which
    handle = ctypes.c_int if MPI._sizeof(MPI.Win) == ctypes.sizeof(ctypes.c_int) else ctypes.c_void_p
    fetch_and_op.argtypes = [ctypes.c_void_p, ctypes.c_void_p, handle, ctypes.c_int, ctypes.c_ssize_t,
                             handle, handle]
    flush.argtypes = [ctypes.c_int, handle]
    win, int64, op = MPI._handleof(window), MPI._handleof(MPI.INT64_T), MPI._handleof(MPI.MAX)
    origin_at, result_at = origin.buffer_info()[0], result.buffer_info()[0]

    def fetch_and_max(cell: int) -> None:
        if fetch_and_op(origin_at, result_at, int64, 0, cell, op, win) or flush(0, win):
            raise RuntimeError(f"hpcray: MPI_Fetch_and_op on claim cell {cell} failed")
    return fetch_and_max
