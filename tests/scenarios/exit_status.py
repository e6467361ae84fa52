"""The driver ends in various ways; every rank must end within seconds with the driver's status.

    python exit_status.py MODE          or       mpiexec -n 4 python exit_status.py MODE
MODE: normal | raise | sysexit | sigterm | sigint | busy | killed (runs until ended from outside:
scancel, a time limit; prints RUNNING once every worker runs a task)
"""

import os
import signal
import sys
import time

import numpy as np

import hpcray as ray

ray.init()


@ray.remote
def sleeper(seconds):
    time.sleep(seconds)
    return seconds


@ray.remote
def pid():
    return os.getpid()


@ray.remote
def make_large():
    return np.ones(1_000_000)


mode = sys.argv[1]
pids = sorted(set(ray.get([pid.remote() for _ in range(12)])))
print("WORKER_PIDS", " ".join(map(str, pids)), flush=True)
# large objects in the arena, still referenced and viewed when the driver ends (this once crashed
# the driver at exit: a block's lease was released into memory MPI had already unmapped)
KEEP = [ray.put(np.ones(1_000_000)), ray.get(ray.put(np.ones(500_000))), ray.get(make_large.remote()),
        make_large.remote()]
if mode == "normal":
    assert ray.get(sleeper.remote(0)) == 0
elif mode == "raise":
    raise ValueError("driver failed on purpose")
elif mode == "sysexit":
    sys.exit(3)
elif mode == "sigterm":
    refs = [sleeper.remote(60) for _ in range(4)]
    os.kill(os.getpid(), signal.SIGTERM)
    ray.get(refs)
elif mode == "sigint":
    refs = [sleeper.remote(60) for _ in range(4)]
    os.kill(os.getpid(), signal.SIGINT)  # like Ctrl-C: KeyboardInterrupt in the driver
    ray.get(refs)
elif mode == "killed":
    refs = [sleeper.remote(600) for _ in range(len(pids) * 2)]
    time.sleep(1.0)
    print("RUNNING", flush=True)
    ray.get(refs)
elif mode == "busy":
    refs = [sleeper.remote(60) for _ in range(4)]
    time.sleep(0.5)  # tasks are running in every worker when the driver leaves
print("DRIVER_END", flush=True)
