"""A bug in a rank's loop (injected: the executor fails on one task's EXECUTE) ends the job within
seconds, with that rank's traceback on the driver's terminal and a non-zero exit status.

    python loop_failure.py          mpiexec -n 4 python loop_failure.py
"""

import os
import sys
import tempfile
import time

import hpcray as ray
import loop_bug  # arms this process (under mpiexec: every rank)

ray.init()
serving = {r for node in ray.nodes() for r in node["Ranks"] if r != 0} or {0}
armed = set()
deadline = time.monotonic() + 30
while armed != serving and time.monotonic() < deadline:
    armed |= set(ray.get([loop_bug.arm.remote() for _ in range(8)], timeout=30))
print("FIRST", sorted(armed), flush=True)


STARTED = tempfile.mkstemp(prefix="hpcray-loop-failure-")[1]


@ray.remote
def held_up():
    with open(STARTED, "a") as marks:  # (RUNNING in list_tasks is the scheduler's view: sent)
        marks.write("x\n")
    time.sleep(60)


# every CPU busy, each rank's thread inside its task: the failing rank is running one (its
# message names it), explode queues there
cpus = int(ray.cluster_resources()["CPU"])
busy = [held_up.remote() for _ in range(cpus)]
while open(STARTED).read().count("x") < cpus:
    time.sleep(0.05)
os.unlink(STARTED)
started = time.monotonic()
try:
    ray.get(loop_bug.explode.remote(), timeout=60)
except BaseException as exc:  # a failed loop may first fail the waiters, but the job ends
    print("RAISED", type(exc).__name__, flush=True)
time.sleep(30)
print("STILL_RUNNING", time.monotonic() - started, flush=True)
sys.exit(0)
