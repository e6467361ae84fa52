"""A worker rank spawned by ``init()`` (spawn.py). It starts as ``python -c spawn.BOOTSTRAP PAYLOAD``:
the bootstrap takes the driver's import path and working directory, joins the driver's
communicator and only then imports hpcray and calls ``main``, which serves tasks until the driver
ends. Joining first matters: the driver spins a core inside ``MPI_Comm_spawn`` and
``Intercomm_merge`` (MPICH has no idle wait there), so every import a worker made before joining
was slowed by the driver's spin and by the other workers' imports; after the merge the driver
waits in a polled ``Idup`` that sleeps. A worker watches the driver's process and leaves,
removing its shared-memory files, if the driver dies first."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from .config import PROCESS_WATCH_S
from .spawn import open_crash_file, process_alive


def _watch_driver(pid: int) -> None:
    """Leave as soon as the driver's process is gone (killed before it could say EXIT), where
    the launcher has not ended us already (MPICH's SIGKILLs its processes then)."""
    while process_alive(pid):
        time.sleep(PROCESS_WATCH_S)
    from .runtime import unlink_mapped_shm
    unlink_mapped_shm()
    os._exit(1)


def main(payload: dict, parent: Any, merged: Any) -> None:
    """Serve as a worker rank of ``merged`` (the driver's spawn merged with its workers), or,
    started to replace dead ranks (``payload["replace"]``), under a dead rank's number."""
    if payload["host"] == socket.gethostname():  # (a replacement may start on another host)
        threading.Thread(target=_watch_driver, args=(payload["driver"],), name="hpcray-driver-watch",
                         daemon=True).start()
    from .runtime import report_crashes_to
    report_crashes_to(open_crash_file(payload.get("crash_file")))
    from .comm import duplicate
    from .config import Config
    from .worker_rank import serve_worker
    config = Config.from_env()
    if "replace" in payload:
        _replace(payload["replace"], parent, merged, config)
        return
    comm = duplicate(merged, config.init_timeout_s)
    rank = comm.Get_rank()
    num_gpus = payload["num_gpus"][rank - 1] if payload["num_gpus"] is not None else None
    serve_worker(comm, config, num_gpus=num_gpus, resources=payload["resources"][rank - 1],
                 spawned=(parent, merged), detect_gpus=payload.get("detect_gpus", True))


def _replace(order: dict, parent: Any, merged: Any, config: Any) -> None:
    """The other side of ``MPITransport.grow``: take the number of one of the dead ranks (the
    ``i``-th spawned process the ``i``-th dead rank), then serve like the process that died."""
    from mpi4py import MPI
    from .worker_rank import serve_worker
    rank = order["ranks"][MPI.COMM_WORLD.Get_rank()]
    comm = merged.Split(0, rank)
    merged.Free()
    parent.Free()
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    numbers = comm.allgather(rank)
    serve_worker(comm, config, replacement=(order["generation"], numbers))
