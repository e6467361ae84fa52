"""What runs where: code above init() runs on every rank, code below only on the driver; what a
task prints reaches the driver's output with a (name pid=..., rank=...) prefix."""

import os
import sys

marker_dir = sys.argv[1]
open(os.path.join(marker_dir, f"above-{os.getpid()}"), "w").close()

import hpcray as ray  # noqa: E402

ray.init()
open(os.path.join(marker_dir, f"below-{os.getpid()}"), "w").close()


@ray.remote
def say(i):
    print(f"hello-from-task-{i}")
    print("partial line without newline", end="")
    return ray.get_runtime_context().get_rank()


ranks = ray.get([say.remote(i) for i in range(6)])
print(f"TASK_RANKS {sorted(set(ranks))}", flush=True)  # one write: see the test
print("driver line is not prefixed", flush=True)
