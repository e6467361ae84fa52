"""Large objects between pretend hosts (HPCRAY_RANKS_PER_HOST=2): mapped zero-copy on the same
host, read with Rget from the world window (or fetched point-to-point, hosts_p2p.py) across."""

import numpy as np

import hpcray as ray
from hpcray import exceptions

from .arena import in_arena, mpi
from .helpers import raises, skip, wait_for_condition

MB = 1 << 20
ENV = {"HPCRAY_RANKS_PER_HOST": "2"}


def rank() -> int:
    return ray.get_runtime_context().get_rank()


def same_host(a: int, b: int) -> bool:
    return a // 2 == b // 2


@ray.remote(scheduling_strategy="SPREAD")
def make_here(nbytes, fill):
    return rank(), np.full(nbytes // 8, fill)


@ray.remote(scheduling_strategy="SPREAD")
def consume(pair):
    producer, array = pair
    return producer, rank(), in_arena(array), float(array.sum())


@ray.remote(scheduling_strategy="SPREAD")
def total(array):
    return rank(), in_arena(array), float(array.sum())


def case_objects_from_every_rank_reach_the_driver():
    refs = [make_here.remote(2 * MB, float(i)) for i in range(8)]
    producers = set()
    for i, ref in enumerate(refs):
        producer, array = ray.get(ref)
        producers.add(producer)
        assert float(array.sum()) == float(i) * MB // 4
        if mpi():
            assert in_arena(array) == same_host(producer, 0), (producer, in_arena(array))
    if mpi():
        assert {2, 3} & producers, f"no object came from the other host: {producers}"


def case_worker_to_worker_across_hosts():
    from hpcray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    nodes = [n for n in ray.nodes() if any(r != 0 for r in n.get("Ranks", []))]
    pairs = 0
    for producer_node in nodes:
        on = NodeAffinitySchedulingStrategy(producer_node["NodeID"], soft=False)
        ref = make_here.options(scheduling_strategy=on).remote(2 * MB, 2.0)
        for consumer_node in nodes:
            there = NodeAffinitySchedulingStrategy(consumer_node["NodeID"], soft=False)
            producer, consumer, zero_copy, value = ray.get(consume.options(scheduling_strategy=there).remote(ref))
            assert value == 2.0 * MB // 4
            assert zero_copy == same_host(producer, consumer), (producer, consumer, zero_copy)
            pairs += not same_host(producer, consumer)
    if mpi():
        assert len(nodes) == 2 and pairs == 2, (nodes, pairs)  # each host read the other's object


def case_driver_put_reaches_every_rank():
    ref = ray.put(np.full(MB // 2, 4.0))
    results = ray.get([total.remote(ref) for _ in range(6)])
    for consumer, zero_copy, value in results:
        assert value == 4.0 * MB // 2
        if mpi():
            assert zero_copy == same_host(consumer, 0)


def case_freed_object_on_other_host_is_lost_not_garbage():
    @ray.remote(scheduling_strategy="SPREAD")
    def forget_everything():
        from hpcray._private import runtime
        session = runtime.current()
        session.executor.plane.owned.clear()
        return rank()

    if not mpi():
        skip("single rank: every value is in rank 0's own table, no other rank can lose it")
    refs = [make_here.remote(MB, 7.0) for _ in range(6)]
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    ray.get([forget_everything.remote() for _ in range(8)])
    for ref in refs:
        raises(exceptions.ObjectLostError, ray.get, ref, timeout=20)


def case_placement_group_strategies_follow_hosts():
    from hpcray.util import placement_group, placement_group_table, remove_placement_group
    hosts = {n["NodeID"] for n in ray.nodes() if any(r != 0 for r in n.get("Ranks", []))}
    spread = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_SPREAD")
    packed = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
    try:
        if len(hosts) >= 2:
            assert spread.wait(20) and packed.wait(20)
            assert len(set(placement_group_table(spread)["bundles_to_node_id"].values())) == 2
            assert len(set(placement_group_table(packed)["bundles_to_node_id"].values())) == 1
        else:  # one host: two bundles cannot go to two hosts
            assert packed.wait(20) and not spread.wait(0.5)
    finally:  # a failed check must not leave the groups holding CPUs the next cases need
        remove_placement_group(spread)
        remove_placement_group(packed)


def case_busy_producer_still_serves_its_objects():
    """The producer's rank is busy in a long pure-Python call (holding the GIL most of the time)
    while a consumer on the other host reads its object: Rget needs nothing of the producer, and
    point-to-point needs only its comm thread."""
    import os
    import time

    from hpcray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .helpers import scratch_file

    @ray.remote
    class Producer:
        def make(self, nbytes):
            return np.full(nbytes // 8, 6.0)

        def spin(self, flag, limit_s):
            open(flag + ".started", "w").close()
            started = time.monotonic()
            while not os.path.exists(flag) and time.monotonic() - started < limit_s:
                pass  # busy, in Python
            return time.monotonic() - started

    others = [n for n in ray.nodes() if min(n.get("Ranks", [0])) >= 2]
    options = {}
    if others:  # a host without the driver
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(others[0]["NodeID"], soft=False)
    producer = Producer.options(**options).remote()
    ref = producer.make.remote(8 * MB)
    ray.wait([ref], fetch_local=False, timeout=20)
    flag = scratch_file("busy-producer")
    busy = producer.spin.remote(flag, 60)
    wait_for_condition(lambda: os.path.exists(flag + ".started"), timeout=20)
    assert float(ray.get(ref, timeout=20).sum()) == 6.0 * MB
    assert not ray.wait([busy], timeout=0)[0], "the producer stopped being busy before the read"
    open(flag, "w").close()
    assert ray.get(busy, timeout=20) < 60
    ray.kill(producer)
