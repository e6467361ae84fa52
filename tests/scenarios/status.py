"""The status table on the driver's stderr: asked for with SIGUSR1, or every HPCRAY_STATUS_S.

    status.py self      the driver sends itself SIGUSR1 while tasks run and one cannot be placed
    status.py run S     tasks run for S seconds (the test signals the job, or sets HPCRAY_STATUS_S)
    status.py progress  the driver asks for the table while its main thread waits in get()
"""

import os
import signal
import sys
import threading
import time

import numpy as np

import hpcray as ray

ray.init()


@ray.remote
def slow():
    time.sleep(0.2)
    return os.getpid()


@ray.remote(resources={"no-such-thing": 1})
def never():
    return 0


print("DRIVER", os.getpid(), flush=True)
@ray.remote
def make_large():
    return np.ones(1_000_000)  # 8 MB, kept where it was made (its arena, or private memory)


if sys.argv[1] == "self":
    large = make_large.remote()
    ray.wait([large], timeout=60)
    pending = never.remote()
    refs = [slow.remote() for _ in range(8)]
    time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGUSR1)
    ray.get(refs, timeout=60)
    time.sleep(1)  # the table is written by a thread of its own
    ray.cancel(pending)
elif sys.argv[1] == "progress":
    @ray.remote
    def quarter():
        time.sleep(0.25)

    ray.get(quarter.remote(), timeout=60)  # the workers are up and have the function
    threading.Timer(0.8, os.kill, (os.getpid(), signal.SIGUSR1)).start()
    ray.get([quarter.remote() for _ in range(24)], timeout=60)  # 2 s or more on 3 CPUs
    time.sleep(1)  # the table is written by a thread of its own
else:
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        ray.get([slow.remote() for _ in range(4)], timeout=60)
print("DONE", flush=True)
