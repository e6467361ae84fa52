"""HPCRAY_TIMELINE_EVENTS, the driver's setting for each session, on every rank:

    session 1: HPCRAY_TIMELINE_EVENTS=0   timeline() raises: nothing is recorded
    session 2: HPCRAY_TIMELINE_EVENTS=5   each rank keeps its 5 newest events, the trace names the drops
"""

import os

import hpcray as ray


@ray.remote
def noted(i):
    return i


def run_tasks(count):
    assert ray.get([noted.remote(i) for i in range(count)], timeout=60) == list(range(count))


os.environ["HPCRAY_TIMELINE_EVENTS"] = "0"
ray.init()
run_tasks(20)
try:
    ray.timeline()
except RuntimeError as exc:
    assert "HPCRAY_TIMELINE_EVENTS=0" in str(exc), exc
else:
    raise AssertionError("timeline() with recording off returned")
ray.shutdown()

os.environ["HPCRAY_TIMELINE_EVENTS"] = "5"
ray.init()
run_tasks(40)
trace = ray.timeline()
ran = [e for e in trace if e["ph"] == "X"]
per_rank = {}
for event in ran:
    per_rank[event["pid"]] = per_rank.get(event["pid"], 0) + 1
assert per_rank and max(per_rank.values()) <= 5, per_rank
# 40 tasks ran somewhere: the ranks that ran them say they dropped older events
names = {e["pid"]: e["args"]["name"] for e in trace if e["ph"] == "M" and e["name"] == "process_name"}
assert any("older events dropped" in name for name in names.values()), names
ray.shutdown()
print("TIMELINE_EVENTS_OK", sorted(per_rank.items()), flush=True)
