"""The node-shared arena: same-host gets are zero-copy, read-only, pinned while used, and freed."""

import gc

import numpy as np

import hpcray as ray
from hpcray._private import serialization

from .helpers import wait_for_condition

MB = 1 << 20


def arena():
    """This rank's SharedArena (None on a single rank, or with the arena off)."""
    return serialization._Arena.arena


def in_arena(array) -> bool:
    """True when ``array``'s memory lies inside one of this host's arena segments (no copy)."""
    here = arena()
    if here is None:
        return False
    address = array.__array_interface__["data"][0]
    for rank in here.host_ranks:
        segment = here.segment_of(rank)
        start = np.frombuffer(segment, dtype=np.uint8).__array_interface__["data"][0]
        if start <= address < start + len(segment):
            return True
    return False


def mpi() -> bool:
    return any(r != 0 for node in ray.nodes() for r in node.get("Ranks", []))


@ray.remote
def make(nbytes, fill=1.0):
    return np.full(nbytes // 8, fill)


@ray.remote
def inspect(array):
    """Where a task's argument lives, as seen by the task: (zero-copy?, writeable?, sum, rank)."""
    return in_arena(array), bool(array.flags.writeable), float(array.sum()), \
        ray.get_runtime_context().get_rank()


@ray.remote
def arena_used():
    here = arena()
    return ray.get_runtime_context().get_rank(), here.used_bytes() if here is not None else 0


def case_same_host_get_is_a_zero_copy_read_only_view():
    array = ray.get(make.remote(16 * MB, 2.0))
    assert float(array.sum()) == 2.0 * 2 * MB
    assert not array.flags.writeable  # like Ray: numpy values from the object store are read-only
    put = ray.get(ray.put(np.arange(4 * MB, dtype=np.int32)))
    assert not put.flags.writeable and int(put[-1]) == 4 * MB - 1
    if mpi():
        assert arena() is not None, "no arena under mpiexec on a machine with /dev/shm"
        assert in_arena(array), "the array made on a worker rank was copied, not mapped"
        assert in_arena(put), "the driver's put is not in its arena"


def case_task_argument_from_same_host_is_zero_copy():
    produced = make.remote(8 * MB, 3.0)
    zero_copy, writeable, total, _ = ray.get(inspect.remote(produced))
    assert total == 3.0 * MB and not writeable
    put_zero_copy, _, put_total, _ = ray.get(inspect.remote(ray.put(np.ones(MB))))
    assert put_total == float(MB)
    if mpi():
        assert zero_copy and put_zero_copy


def case_view_outlives_its_ref_and_keeps_its_block():
    ref = make.remote(8 * MB, 5.0)
    kept = ray.get(ref)
    del ref
    gc.collect()
    for i in range(10):  # churn: were the block freed, these would reuse it
        ray.get([make.remote(8 * MB, float(i)) for _ in range(3)])
        ray.get(ray.put(np.full(MB, -1.0)))
    assert np.all(kept == 5.0)


def case_arena_blocks_are_freed_on_every_rank():
    gc.collect()
    workers = {r for node in ray.nodes() for r in node.get("Ranks", []) if r != 0}

    def used_everywhere():
        seen = dict(ray.get([arena_used.options(scheduling_strategy="SPREAD").remote()
                             for _ in range(2 * max(len(workers), 1))]))
        seen[0] = arena().used_bytes() if arena() is not None else 0
        return seen

    before = used_everywhere()
    refs = [make.remote(4 * MB, float(i)) for i in range(12)] + [ray.put(np.ones(MB)) for _ in range(6)]
    ray.get([inspect.remote(r) for r in refs])
    values = ray.get(refs)
    during = used_everywhere()
    if mpi():
        assert sum(during.values()) >= sum(before.values()) + 12 * 4 * MB
    del refs, values
    gc.collect()

    def back_to_before():
        now = used_everywhere()
        return set(now) >= set(before) and all(now[r] <= before[r] for r in before)
    wait_for_condition(back_to_before, timeout=20)


def case_returned_value_is_a_snapshot():
    @ray.remote
    class Holder:
        def __init__(self):
            self.array = np.zeros(2 * MB)

        def get(self):
            return self.array

        def bump(self):
            self.array += 1
            return float(self.array[0])

    holder = Holder.remote()
    first = holder.get.remote()
    ray.get(first)
    assert ray.get(holder.bump.remote()) == 1.0
    assert float(ray.get(first).max()) == 0.0  # the object kept the value as it was returned
    assert float(ray.get(holder.get.remote())[0]) == 1.0
    ray.kill(holder)


def case_object_held_by_an_actor_lives_until_the_actor_lets_go():
    from hpcray._private.api import query

    @ray.remote
    class Keeper:
        def keep(self, box):
            self.box = box  # a list: the ref inside stays a ref
            return True

        def total(self):
            return float(ray.get(self.box[0]).sum())

        def drop(self):
            self.box = None
            gc.collect()
            return True

    keeper = Keeper.remote()
    ray.get(keeper.keep.remote([None]))
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0)
    base = query("stats")["objects"]
    ref = make.remote(4 * MB, 2.0)
    ray.get(keeper.keep.remote([ref]))
    del ref
    gc.collect()
    wait_for_condition(lambda: query("stats")["objects"] == base + 1)  # only the actor holds it
    assert ray.get(keeper.total.remote()) == 2.0 * MB // 2
    ray.get(keeper.drop.remote())
    wait_for_condition(lambda: query("stats")["objects"] == base)
    ray.kill(keeper)
