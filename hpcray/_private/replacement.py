"""New processes for dead worker ranks (Open MPI with ULFM): a long job does not shrink rank by
rank.

    driver: transport sees a rank die ─► scheduler goes on without it (rank_loss.py)
        ─► Replacement.on_dead ─► end of the turn: REPLACE(ranks) to every live worker,
           then MPITransport.grow (Shrink, MPI_Comm_spawn, merge, split by job rank)
    each live worker: REPLACE ─► end of its turn: ``join`` ─► MPITransport.grow (the same calls)
    each new process: spawn.BOOTSTRAP ─► spawned_worker._replace: the dead rank's number
        ─► serve_worker ─► HELLO ─► Scheduler.on_hello: the dead rank's resources and GPUs,
           WELCOME ─► it takes tasks and actors like any rank

Every rank blocks in the collective calls for their length (about 0.2 s here); a rank busy in a
call that holds the GIL joins when it returns. The new process has no arena (the ranks of a host
make theirs together at the start): its values travel point to point. A value that lived on the
dead process is asked of the scheduler again (REFETCH with the generation of the process that
held it), as before the replacement. Where a step fails (MPI cannot start processes, another
rank died meanwhile), the job goes on without the dead ranks and replaces no more.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, List, Optional, Set

from . import protocol as P
from .spawn import bootstrap_args, driver_payload

logger = logging.getLogger("hpcray")


def cannot_spawn() -> Optional[str]:
    """Why this job's launcher cannot start new processes, or None. Open MPI's own ``mpiexec``
    (PRRTE, which marks its processes with ``PRTE_LAUNCHED``) can; a job started another way
    (``srun`` with ULFM turned on by hand) may hang in MPI_Comm_spawn, so it is not tried."""
    if os.environ.get("PRTE_LAUNCHED"):
        return None
    return "the job was not started by Open MPI's mpiexec, the launcher that can start processes for it"


class Replacement:
    """The driver's side: which dead ranks to replace, and the replacing."""

    def __init__(self, loop: Any, enabled: bool):
        self.loop = loop
        self.transport = loop.transport
        self.enabled = enabled
        self.why_not = cannot_spawn() if enabled else None
        self.waiting: Set[int] = set()

    def on_dead(self, ranks: List[int]) -> None:
        """Worker ranks died (the scheduler has gone on without them): replace them at the end of
        this turn (never inside the handling of the message that showed the death)."""
        if not self.enabled:
            return
        if self.why_not is not None:
            logger.warning("hpcray: no new process for dead rank(s) %s: %s; the job goes on with "
                           "fewer ranks (HPCRAY_REPLACE_DEAD_RANKS=0 says so quietly)", ranks, self.why_not)
            self.enabled = False
            return
        fresh = [rank for rank in ranks if rank != 0 and rank not in self.waiting]
        if fresh:
            if not self.waiting:
                self.loop.defer(self.replace)
            self.waiting.update(fresh)

    def replace(self) -> None:
        transport = self.transport
        ranks = sorted(rank for rank in self.waiting if rank in transport.dead)
        self.waiting.clear()
        if not ranks:
            return
        from mpi4py import MPI
        generation = max(transport.comms) + 1
        payload = driver_payload(replace={"ranks": ranks, "generation": generation})
        for rank in range(1, transport.size):
            if rank not in transport.dead:
                transport.send(rank, [P.encode((P.REPLACE, ranks))])
        started = time.monotonic()
        try:
            transport.grow(ranks, sys.executable, bootstrap_args(payload))
        except MPI.Exception as exc:
            self.enabled = False
            logger.error("hpcray: could not start new processes for dead rank(s) %s (%s); the job goes on "
                         "without them and replaces no more", ranks, exc)
            return
        self.loop.plane.on_replaced(ranks)
        logger.warning("hpcray: started new process(es) for dead rank(s) %s in %.2f s", ranks,
                       time.monotonic() - started)


def join(loop: Any, plane: Any, ranks: List[int]) -> None:
    """A live worker's side of the driver's ``replace`` (REPLACE): the same collective calls."""
    from mpi4py import MPI
    try:
        loop.transport.grow(ranks, sys.executable, [])
    except MPI.Exception as exc:
        logger.error("hpcray: rank %d: replacing dead rank(s) %s failed (%s); going on without them",
                     loop.rank, ranks, exc)
        return
    plane.on_replaced(ranks)
