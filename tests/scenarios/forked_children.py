"""A process a task or actor forks (a multiprocessing pool left open, whose processes ignore
SIGTERM as a process with a shutdown of its own may) ends with the job.

    forked_children.py exit     prints the pool processes' pids, then the driver exits
    forked_children.py linger   prints them, then sleeps (the test kills the driver)
"""

import multiprocessing
import signal
import sys
import time

import hpcray as ray

ray.init()


@ray.remote
class PoolHolder:
    """Keeps a fork pool open and never closes it."""

    def __init__(self):
        self.pool = multiprocessing.get_context("fork").Pool(2, initializer=signal.signal,
                                                             initargs=(signal.SIGTERM, signal.SIG_IGN))

    def pool_pids(self):
        assert self.pool.map(abs, range(-4, 4)) == [4, 3, 2, 1, 0, 1, 2, 3]
        return [p.pid for p in self.pool._pool]


holder = PoolHolder.remote()
print("POOL_PIDS", " ".join(map(str, ray.get(holder.pool_pids.remote(), timeout=60))), flush=True)
if sys.argv[1] == "linger":
    time.sleep(120)
