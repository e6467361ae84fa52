"""Resources, placement and the runtime context, in both launch modes.

Each rank (single rank: the process) advertises 2 CPUs, 2 pretend GPUs and 2 of "custom".
"""

import os
import time

import hpcray as ray
from hpcray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .helpers import wait_for_condition

ENV = {"HPCRAY_NUM_CPUS": "2", "HPCRAY_NUM_GPUS": "2", "HPCRAY_RESOURCES": '{"custom": 2}'}


@ray.remote
def context_view():
    ctx = ray.get_runtime_context()
    return {"task": ctx.get_task_id(), "job": ctx.get_job_id(), "node": ctx.get_node_id(),
            "assigned": ctx.get_assigned_resources(), "actor": ctx.get_actor_id(),
            "gpus": ray.get_gpu_ids(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def case_cluster_resources_shape():
    total = ray.cluster_resources()
    assert total["CPU"] >= 2 and total["CPU"] % 2 == 0
    assert total["GPU"] == total["CPU"] and total["custom"] == total["CPU"]
    assert any(k.startswith("node:") for k in total) and "node:__internal_head__" in total
    assert total["memory"] > 0
    wait_for_condition(lambda: ray.available_resources().get("CPU") == total["CPU"])


def case_available_resources_drop_while_running():
    total = ray.cluster_resources()["CPU"]

    @ray.remote(num_cpus=2)
    def hold():
        time.sleep(1.5)

    ref = hold.remote()
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == total - 2, timeout=5)
    ray.get(ref)
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == total, timeout=5)


def case_runtime_context_driver_and_task():
    ctx = ray.get_runtime_context()
    assert ctx.get_task_id() is None and ctx.get_actor_id() is None
    assert isinstance(ctx.get_job_id(), str) and isinstance(ctx.get_node_id(), str)
    view = ray.get(context_view.remote())
    assert isinstance(view["task"], str) and view["actor"] is None
    assert view["job"] == ctx.get_job_id()
    assert view["assigned"] == {"CPU": 1.0}
    two = ray.get(context_view.options(num_cpus=2).remote())
    assert two["assigned"] == {"CPU": 2.0}
    custom = ray.get(context_view.options(resources={"custom": 1.5}).remote())
    assert custom["assigned"] == {"CPU": 1.0, "custom": 1.5}


def case_gpu_ids_and_cuda_visible_devices_narrowed():
    view = ray.get(context_view.options(num_gpus=1).remote())
    assert len(view["gpus"]) == 1 and view["cvd"] == str(view["gpus"][0])
    both = ray.get(context_view.options(num_gpus=2).remote())
    assert len(both["gpus"]) == 2 and both["cvd"] == ",".join(str(g) for g in both["gpus"])
    assert ray.get(context_view.remote())["gpus"] == []


def case_fractional_gpus_pack_together():
    @ray.remote(num_gpus=0.5)
    def half(path):
        with open(path, "a") as handle:
            handle.write("x")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until both halves run at once
            with open(path) as handle:
                if len(handle.read()) >= 2:
                    break
            time.sleep(0.01)
        return ray.get_gpu_ids(), os.getpid()

    path = os.path.join(os.environ.get("CASE_TMP", "/tmp"), f"half-{time.time_ns()}")
    node = ray.get_runtime_context().get_node_id()
    strategy = NodeAffinitySchedulingStrategy(node, soft=False)
    (g1, p1), (g2, p2) = ray.get([half.options(scheduling_strategy=strategy).remote(path) for _ in range(2)])
    if p1 == p2:  # same rank: the two halves share one GPU
        assert g1 == g2 and len(g1) == 1


def case_fractional_cpus_run_concurrently():
    @ray.remote(num_cpus=0.5)
    def stamp():
        start = time.monotonic()
        time.sleep(0.5)
        return start, time.monotonic()

    spans = ray.get([stamp.remote() for _ in range(4)])
    # 4 half-CPU tasks fit in 2 CPUs: they overlap in time
    assert max(s for s, _ in spans) < min(e for _, e in spans)


def case_custom_resource_task_runs_and_infeasible_stays_pending():
    assert ray.get(context_view.options(resources={"custom": 2}).remote())["assigned"]["custom"] == 2.0
    ref = context_view.options(resources={"custom": 100}).remote()
    ready, not_ready = ray.wait([ref], timeout=0.5)
    assert ready == [] and not_ready == [ref]
    ref2 = context_view.options(num_cpus=1000).remote()
    assert ray.wait([ref2], timeout=0.3)[0] == []
    assert ray.get(context_view.remote())["assigned"] == {"CPU": 1.0}  # others still run


def case_nodes_and_node_affinity():
    nodes = ray.nodes()
    assert len(nodes) >= 1
    for node in nodes:
        assert node["Alive"] is True and node["Resources"]["CPU"] >= 2
        assert isinstance(node["NodeID"], str) and node["NodeManagerHostname"]
    target = nodes[-1]["NodeID"]
    strategy = NodeAffinitySchedulingStrategy(target, soft=False)
    views = ray.get([context_view.options(scheduling_strategy=strategy).remote() for _ in range(4)])
    assert all(v["node"] == target for v in views)


def case_spread_uses_several_ranks():
    @ray.remote(scheduling_strategy="SPREAD")
    def where():
        time.sleep(0.2)
        return ray.get_runtime_context().get_rank()

    ranks = set(ray.get([where.remote() for _ in range(8)]))
    expected = len(ray.nodes()[0].get("Ranks", [0])) if ray.get_runtime_context().get_rank() == 0 else 1
    assert len(ranks) >= min(2, expected) or ranks == {0}


def case_get_runtime_context_before_init_does_not_autoinit():
    assert ray.is_initialized()
    ctx = ray.get_runtime_context()
    assert ctx.get_job_id()
