"""A job of more worker ranks than scheduler.INDEX_RANKS, so rank 0 places tasks through its
RoomIndex: plain tasks, fractional ones, SPREAD ones, tasks that submit tasks and wait for them,
actors; every result right and every worker rank used.

    mpiexec -n 11 python many_ranks.py          HPCRAY_SPAWN_WORKERS=10 python many_ranks.py
"""

import os
import time

import hpcray as ray
from hpcray._private.config import INDEX_RANKS

ray.init()
workers = sorted({r for node in ray.nodes() for r in node["Ranks"] if r != 0})
assert len(workers) > INDEX_RANKS, (workers, INDEX_RANKS)


@ray.remote
def where(i):
    time.sleep(0.005)  # (long enough that a few warm ranks cannot take every task)
    return i, ray.get_runtime_context().get_rank()


@ray.remote(num_cpus=0.5)
def half(i):
    return i


@ray.remote
def tree(n):
    return sum(ray.get([half.remote(i) for i in range(n)]))


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def add(self):
        self.n += 1
        return self.n, os.getpid()


results = ray.get([where.remote(i) for i in range(2000)], timeout=120)
assert [i for i, _ in results] == list(range(2000))
assert {rank for _, rank in results} == set(workers), ({rank for _, rank in results}, workers)  # every rank worked
assert ray.get([half.remote(i) for i in range(500)], timeout=120) == list(range(500))
spread = ray.get([where.options(scheduling_strategy="SPREAD").remote(i) for i in range(len(workers))], timeout=60)
assert sorted(rank for _, rank in spread) == workers, spread  # one on each rank
assert ray.get([tree.remote(10) for _ in range(3 * len(workers))], timeout=120) == [45] * (3 * len(workers))
counters = [Counter.remote() for _ in range(len(workers))]
assert [n for n, _ in ray.get([c.add.remote() for c in counters], timeout=60)] == [1] * len(workers)
print("MANY_RANKS_OK", len(workers), flush=True)
