"""The entry point of a worker rank spawned by ``init()`` (spawn.py): ``python -m
hpcray._private.spawned_worker PAYLOAD``. It takes the driver's import path and working
directory, joins the driver's communicator and serves tasks until the driver ends; it watches the
driver's process and leaves, removing its shared-memory files, if the driver dies first."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from .config import PROCESS_WATCH_S
from .spawn import process_alive


def _watch_driver(pid: int) -> None:
    """Leave as soon as the driver's process is gone (killed before it could say EXIT), where
    the launcher has not ended us already (MPICH's SIGKILLs its processes then)."""
    while process_alive(pid):
        time.sleep(PROCESS_WATCH_S)
    from .runtime import unlink_mapped_shm
    unlink_mapped_shm()
    os._exit(1)


def main() -> None:
    payload = json.loads(sys.argv[1])
    os.chdir(payload["cwd"])
    sys.path[:] = payload["path"] + [p for p in sys.path if p not in payload["path"]]
    threading.Thread(target=_watch_driver, args=(payload["driver"],), name="hpcray-driver-watch",
                     daemon=True).start()
    from mpi4py import MPI
    from .comm import duplicate
    from .config import Config
    from .worker_rank import serve_worker
    config = Config.from_env()
    parent = MPI.Comm.Get_parent()
    merged = parent.Merge(high=True)
    comm = duplicate(merged, config.init_timeout_s)
    rank = comm.Get_rank()
    serve_worker(comm, config, num_gpus=payload["num_gpus"], resources=payload["resources"][rank - 1],
                 spawned=(parent, merged))


if __name__ == "__main__":
    main()
