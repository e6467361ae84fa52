"""Placement groups: reserve, run tasks and actors in bundles, remove, strategies, bad input."""

import hpcray as ray
from hpcray import exceptions
from hpcray.util import (get_current_placement_group, get_placement_group, placement_group,
                         placement_group_table, remove_placement_group)
from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .helpers import raises, wait_for_condition

ENV = {"HPCRAY_NUM_CPUS": "4"}  # per worker rank under MPI; the process's CPUs on a single rank


def cpus_free():
    return ray.available_resources().get("CPU", 0.0)


def cpus_total():
    return ray.cluster_resources()["CPU"]


def all_cpus_free():
    return abs(cpus_free() - cpus_total()) < 1e-6


@ray.remote(num_cpus=1)
def where():
    group = get_current_placement_group()
    return ray.get_runtime_context().get_rank(), group.id.hex() if group is not None else None


def in_group(group, index=-1, capture=None):
    return PlacementGroupSchedulingStrategy(group, index, capture)


def case_create_ready_remove_gives_resources_back():
    wait_for_condition(all_cpus_free)
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="PACK")
    assert ray.get(group.ready(), timeout=20) == group  # the value is the group, as in Ray
    assert group.wait(5) and group.bundle_count == 2 and group.bundle_specs == [{"CPU": 1.0}, {"CPU": 1.0}]
    assert abs(cpus_free() - (cpus_total() - 2)) < 1e-6
    table = placement_group_table(group)
    assert table["state"] == "CREATED" and table["strategy"] == "PACK" and len(table["bundles_to_node_id"]) == 2
    assert group.id.hex() in placement_group_table()
    remove_placement_group(group)
    wait_for_condition(all_cpus_free)
    wait_for_condition(lambda: placement_group_table(group)["state"] == "REMOVED")
    raises(exceptions.RaySystemError, ray.get, group.ready(), timeout=10)


def case_tasks_run_in_their_bundle():
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    ray.get(group.ready(), timeout=20)
    ranks = placement_group_table(group)["bundles_to_rank"]
    for index in (0, 1):
        rank, group_hex = ray.get(where.options(scheduling_strategy=in_group(group, index)).remote(), timeout=30)
        assert rank == ranks[index] and group_hex == group.id.hex()
    results = ray.get([where.options(scheduling_strategy=in_group(group)).remote() for _ in range(6)], timeout=30)
    assert {r for r, _ in results} <= set(ranks.values())
    assert ray.get(where.remote(), timeout=30)[1] is None  # outside the group
    assert get_current_placement_group() is None  # the driver
    legacy = ray.get(where.options(placement_group=group, placement_group_bundle_index=1).remote(), timeout=30)
    assert legacy == (ranks[1], group.id.hex())
    remove_placement_group(group)


def case_demand_larger_than_the_bundle_is_an_error_and_work_after_removal_fails():
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=20)
    too_big = where.options(num_cpus=2, scheduling_strategy=in_group(group))
    raises(ValueError, too_big.remote, match="cannot fit into any bundles")  # Ray's check
    remove_placement_group(group)
    late = where.options(scheduling_strategy=in_group(group)).remote()  # the group is gone
    raises(exceptions.RaySystemError, ray.get, late, timeout=20)


def case_infeasible_group_stays_pending_and_can_be_removed():
    group = placement_group([{"CPU": 1000}])
    assert not group.wait(0.5)
    assert placement_group_table(group)["state"] == "PENDING"
    waiting = group.ready()
    remove_placement_group(group)
    raises(exceptions.RaySystemError, ray.get, waiting, timeout=10)


def case_strict_pack_and_strict_spread_on_one_host():
    if len(ray.nodes()) != 1:
        return  # pretend hosts: covered by tests/cases/hosts.py
    packed = placement_group([{"CPU": 0.5}, {"CPU": 0.5}], strategy="STRICT_PACK")
    assert packed.wait(10)
    nodes = placement_group_table(packed)["bundles_to_node_id"]
    assert len(set(nodes.values())) == 1
    spread = placement_group([{"CPU": 0.1}, {"CPU": 0.1}], strategy="STRICT_SPREAD")
    assert not spread.wait(0.5)  # two bundles need two hosts
    one = placement_group([{"CPU": 0.1}], strategy="STRICT_SPREAD")
    assert one.wait(10)
    for group in (packed, spread, one):
        remove_placement_group(group)
    wait_for_condition(all_cpus_free)


def case_actors_in_a_group_die_with_it():
    @ray.remote
    class Member:
        def info(self):
            group = get_current_placement_group()
            return ray.get_runtime_context().get_rank(), group.id.hex() if group else None

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=20)
    member = Member.options(scheduling_strategy=in_group(group, 0)).remote()
    rank, group_hex = ray.get(member.info.remote(), timeout=20)
    assert rank == placement_group_table(group)["bundles_to_rank"][0] and group_hex == group.id.hex()
    remove_placement_group(group)
    raises(exceptions.ActorDiedError, lambda: ray.get(member.info.remote(), timeout=20))


def case_child_tasks_are_captured_only_when_asked():
    @ray.remote(num_cpus=0)
    def parent():
        return ray.get(where.options(num_cpus=0).remote(), timeout=30)[1]

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=20)
    captured = ray.get(parent.options(scheduling_strategy=in_group(group, capture=True)).remote(), timeout=30)
    assert captured == group.id.hex()
    free = ray.get(parent.options(scheduling_strategy=in_group(group)).remote(), timeout=30)
    assert free is None
    remove_placement_group(group)


def case_named_group_can_be_looked_up():
    group = placement_group([{"CPU": 0.1}], name="pg-named-case")
    found = get_placement_group("pg-named-case")
    assert found.id == group.id and found.bundle_specs == [{"CPU": 0.1}]
    raises(ValueError, get_placement_group, "pg-no-such-group")
    remove_placement_group(group)
    wait_for_condition(lambda: placement_group_table(group)["state"] == "REMOVED")
    raises(ValueError, get_placement_group, "pg-named-case")


def case_bad_input_is_an_error_at_the_call():
    raises(ValueError, placement_group, [])
    raises(ValueError, placement_group, [{}])
    raises(ValueError, placement_group, [{"CPU": 0}])
    raises(ValueError, placement_group, [{"CPU": -1}])
    raises(ValueError, placement_group, [{"CPU": 1}], strategy="TIGHT", match="TIGHT")
    raises(ValueError, placement_group, [{"CPU": 1}], lifetime="forever")
    group = placement_group([{"CPU": 0.1}])
    raises(ValueError, lambda: where.options(scheduling_strategy=in_group(group, 1)).remote(),
           match="placement_group_bundle_index")
    raises(TypeError, lambda: where.options(placement_group="mine").remote(), match="placement_group")
    raises(TypeError, remove_placement_group, "mine")
    remove_placement_group(group)


def case_work_for_a_removed_group_fails_instead_of_waiting():
    @ray.remote
    class Member:
        def ping(self):
            return 1

    @ray.remote(num_cpus=0)
    def slow(seconds):
        import time
        time.sleep(seconds)
        return seconds

    @ray.remote(num_cpus=1)
    def after(value):
        return value

    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=20)
    remove_placement_group(group)
    wait_for_condition(lambda: placement_group_table(group)["state"] == "REMOVED")
    late = Member.options(scheduling_strategy=in_group(group)).remote()
    raises(exceptions.ActorDiedError, lambda: ray.get(late.ping.remote(), timeout=20))
    other = placement_group([{"CPU": 1}])
    ray.get(other.ready(), timeout=20)
    waiting = after.options(scheduling_strategy=in_group(other)).remote(slow.remote(0.5))
    remove_placement_group(other)  # before its argument is ready
    raises(exceptions.RaySystemError, ray.get, waiting, timeout=20)
