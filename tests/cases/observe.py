"""Seeing what ran: ``hpcray.timeline()`` as Ray's (Chrome trace events), in every launch mode."""

import json
import os
import time

import numpy as np

import hpcray as ray

from .helpers import raises, scratch_file, skip

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
    for event in tasks:
        assert event["cat"] == "task" and event["dur"] >= 0.05e6 * 0.9, event
        assert started_us - 1e6 <= event["ts"] <= time.time() * 1e6, event
        assert isinstance(event["tid"], int) and len(event["args"]["task_id"]) > 0, event
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
