"""Seeing what ran: ``hpcray.timeline()`` as Ray's (Chrome trace events), in every launch mode."""

import json
import os
import time

import numpy as np

import hpcray as ray

from .helpers import raises, scratch_file, skip, wait_for_condition

# no arena: a large value on another rank of this host moves as a transfer (with the arena it is
# mapped in place, and nothing moves)
ENV = {"HPCRAY_ARENA_BYTES": "0"}


@ray.remote
def traced_task(i):
    time.sleep(0.05)
    return ray.get_runtime_context().get_rank()


@ray.remote
class TracedActor:
    def traced_method(self):
        return ray.get_runtime_context().get_rank()


def complete_events(trace, name):
    return [e for e in trace if e["ph"] == "X" and e["name"] == name]


def case_timeline_has_an_event_per_task_and_call_on_its_rank():
    started_us = time.time() * 1e6
    ranks = ray.get([traced_task.remote(i) for i in range(6)], timeout=60)
    actor = TracedActor.remote()
    actor_rank = ray.get(actor.traced_method.remote(), timeout=60)
    trace = ray.timeline()
    tasks = complete_events(trace, "traced_task")
    assert len(tasks) == 6, tasks
    assert sorted(e["pid"] for e in tasks) == sorted(ranks), (tasks, ranks)
    submits = {e["args"]["task_id"]: e for e in trace if e["ph"] == "i" and e["name"] == "submit traced_task"}
    for event in tasks:
        assert event["cat"] == "task" and event["dur"] >= 0.05e6 * 0.9, event
        assert started_us - 1e6 <= event["ts"] <= time.time() * 1e6, event
        assert isinstance(event["tid"], int) and len(event["args"]["task_id"]) > 0, event
        submit = submits[event["args"]["task_id"]]  # submitted by the driver, before it ran
        assert submit["pid"] == 0 and submit["ts"] <= event["ts"] and event["args"]["queued_ms"] >= 0, submit
    calls = complete_events(trace, "TracedActor.traced_method")
    assert [(e["pid"], e["cat"]) for e in calls] == [(actor_rank, "actor_call")], calls
    assert [e["pid"] for e in complete_events(trace, "TracedActor.__init__")] == [actor_rank]
    # the driver waited for the results: its blocked time is there too
    assert any(e["cat"] == "get" and e["pid"] == 0 for e in trace if e["ph"] == "X"), trace
    named = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
    for rank in set(ranks) | {actor_rank, 0}:
        assert named[rank].startswith(f"rank {rank} ("), named
    threads = {(e["pid"], e["tid"]) for e in trace if e["ph"] == "M" and e["name"] == "thread_name"}
    assert all((e["pid"], e["tid"]) in threads for e in tasks), (tasks, threads)
    ray.kill(actor)


def case_timeline_to_a_file_is_json_that_chrome_reads():
    ray.get(traced_task.remote(0), timeout=60)
    path = scratch_file("timeline.json")
    assert ray.timeline(path) is None
    with open(path) as handle:
        trace = json.load(handle)
    assert complete_events(trace, "traced_task"), trace
    assert all({"name", "ph", "pid", "tid"} <= set(e) for e in trace)
    assert all({"ts", "dur", "cat"} <= set(e) for e in trace if e["ph"] == "X")
    os.remove(path)


def case_timeline_with_a_bad_filename_is_an_error_at_the_call():
    exc = raises(TypeError, ray.timeline, 123)
    assert "filename" in str(exc)


@ray.remote
def make_large():
    return np.ones(1_000_000)


def case_timeline_shows_large_values_moved_between_ranks():
    if all(rank == 0 for node in ray.nodes() for rank in node["Ranks"]):
        skip("one process: no value moves between ranks")
    ref = make_large.remote()
    assert ray.get(ref, timeout=60).nbytes == 8_000_000
    moved = [e for e in ray.timeline() if e["ph"] == "X" and e["cat"] == "object_transfer"
             and e["args"]["object_id"] == ref.hex()]
    assert len(moved) == 1, moved
    assert moved[0]["pid"] == 0 and moved[0]["args"]["from_rank"] != 0, moved
    assert moved[0]["args"]["bytes"] >= 8_000_000 and moved[0]["dur"] >= 0, moved


# ---- hpcray.util.state ------------------------------------------------------------------------
@ray.remote
def held_until(path):
    while not os.path.exists(path):
        time.sleep(0.02)
    return ray.get_runtime_context().get_rank()


@ray.remote
def after(value):
    return value


@ray.remote
def state_fails():
    raise ValueError("on purpose")


@ray.remote
class StateActor:
    def rank(self):
        return ray.get_runtime_context().get_rank()


def wait_for_rows(kind_list, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        rows = kind_list()
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def case_state_lists_tasks_in_each_state_on_their_rank():
    from hpcray.util.state import get_task, list_tasks, summarize_tasks
    cpus = int(ray.cluster_resources()["CPU"])
    gate = scratch_file("gate")
    held = [held_until.remote(gate) for _ in range(cpus + 1)]
    waiting = after.remote(held[0])
    rows = wait_for_rows(lambda: list_tasks(filters=[("name", "=", "held_until")]),
                         lambda rows: sum(r.state == "RUNNING" for r in rows) == cpus)
    states = sorted(r.state for r in rows)
    assert states.count("RUNNING") == cpus and len(states) == cpus + 1, rows
    assert all(r.type == "NORMAL_TASK" and r.required_resources is None for r in rows), rows  # detail only
    detailed = list_tasks(filters=[("name", "=", "held_until")], detail=True)
    assert all(r.required_resources == {"CPU": 1.0} and r.language == "PYTHON" for r in detailed), detailed
    assert get_task(waiting.task_id().hex()).state == "PENDING_ARGS_AVAIL"
    open(gate, "w").close()
    ranks = ray.get(held, timeout=60)
    assert ray.get(waiting, timeout=60) == ranks[0]
    raises(ValueError, ray.get, state_fails.remote())
    done = {r.task_id: r for r in list_tasks(filters=[("name", "=", "held_until")], limit=1000)}
    for ref, rank in zip(held, ranks):
        row = done[ref.task_id().hex()]
        assert (row.state, row.rank) == ("FINISHED", rank), row
    failed = list_tasks(filters=[("name", "=", "state_fails")])
    assert [(r.state, r.error_type, r.error_message) for r in failed] == [("FAILED", "TASK_EXECUTION_EXCEPTION", None)]
    failed = list_tasks(filters=[("error_type", "=", "TASK_EXECUTION_EXCEPTION"), ("name", "=", "state_fails")],
                        detail=True)
    assert len(failed) == 1 and "ValueError: on purpose" in failed[0].error_message, failed
    assert failed[0].creation_time_ms <= failed[0].end_time_ms <= time.time() * 1e3, failed
    assert failed[0].worker_pid is not None and failed[0].worker_id.startswith(f"{failed[0].rank:08x}"), failed
    counts = summarize_tasks()["cluster"]["summary"]["held_until"]["state_counts"]
    assert counts == {"FINISHED": cpus + 1}, counts
    os.remove(gate)


def case_state_lists_actors_and_their_end():
    from hpcray.util.state import get_actor, list_actors, summarize_actors
    actor = StateActor.options(name="state-listed").remote()
    rank = ray.get(actor.rank.remote(), timeout=60)
    row = get_actor(actor._actor_id.hex())
    assert (row.class_name, row.state, row.name, row.rank) == ("StateActor", "ALIVE", "state-listed", rank), row
    assert summarize_actors()["cluster"]["summary"]["StateActor"]["state_counts"].get("ALIVE") == 1
    assert row.death_cause is None and row.num_restarts == 0, row
    ray.kill(actor)
    rows = wait_for_rows(lambda: list_actors(filters=[("name", "=", "state-listed")]),
                         lambda rows: rows and rows[0].state == "DEAD")
    assert [(r.state, r.death_cause) for r in rows] == [("DEAD", None)], rows  # (detail only)
    dead = list_actors(filters=[("name", "=", "state-listed")], detail=True)[0]
    assert "killed" in dead.death_cause["actor_died_error_context"]["error_message"], dead


def case_state_counts_an_actors_restarts():
    from hpcray.util.state import get_actor
    actor = StateActor.options(max_restarts=1).remote()
    ray.get(actor.rank.remote(), timeout=60)
    ray.kill(actor, no_restart=False)  # a restartable actor is started again
    wait_for_condition(lambda: get_actor(actor._actor_id.hex()).num_restarts == 1, timeout=30)
    ray.get(actor.rank.remote(), timeout=60)
    assert get_actor(actor._actor_id.hex()).state == "ALIVE"
    ray.kill(actor)


def case_state_lists_the_jobs_processes():
    from hpcray.util.state import get_worker, list_workers
    workers = list_workers()
    ranks = sorted(w.rank for w in workers)
    assert ranks[0] == 0 and [w.worker_type for w in workers if w.rank == 0] == ["DRIVER"], workers
    expected = {0} | {n for node in ray.nodes() for n in node["Ranks"]}
    assert set(ranks) == expected and len(ranks) == len(expected), (workers, ray.nodes())
    assert all(w.is_alive and w.pid > 0 for w in workers), workers
    here = get_worker(ray.get_runtime_context().get_worker_id())
    assert here is not None and here.rank == 0 and here.pid == os.getpid(), here


def case_state_lists_objects_and_nodes():
    from hpcray.util.state import list_nodes, list_objects, summarize_objects
    ref = ray.put(np.ones(100_000))
    rows = list_objects(filters=[("object_id", "=", ref.hex())])
    assert len(rows) == 1 and rows[0].object_size >= 800_000, rows
    assert summarize_objects()["cluster"]["total_objects"] >= 1
    nodes = list_nodes()
    assert sorted(n.node_id for n in nodes) == sorted(n["NodeID"] for n in ray.nodes()), nodes
    del ref


def case_state_bad_filters_and_limits_are_errors_at_the_call():
    from hpcray.util.state import list_tasks
    assert "'>'" in str(raises(ValueError, list_tasks, filters=[("state", ">", "x")]))
    ray.get(after.remote(1), timeout=60)
    assert "no_such_field" in str(raises(ValueError, list_tasks, filters=[("no_such_field", "=", "x")]))
    assert "limit" in str(raises(ValueError, list_tasks, limit=-1))
    assert len(list_tasks(limit=1)) == 1


@ray.remote
def lists_itself():
    from hpcray.util.state import get_task
    me = get_task(ray.get_runtime_context().get_task_id())
    return me.name, me.state, me.rank


def case_state_is_callable_from_a_task():
    name, state, rank = ray.get(lists_itself.remote(), timeout=60)
    assert (name, state) == ("lists_itself", "RUNNING"), (name, state)
    assert rank in {r for n in ray.nodes() for r in n["Ranks"]}, rank
