"""The driver ends while a worker rank cannot answer (stopped with SIGSTOP, or stuck in a call
that holds the GIL): the job still ends within HPCRAY_EXIT_TIMEOUT_S, naming that rank.

    mpiexec -n 3 python stopped_rank.py stop|gil
"""

import os
import re
import signal
import sys
import time

import hpcray as ray

ray.init()


@ray.remote
def where():
    time.sleep(0.2)
    return ray.get_runtime_context().get_rank(), os.getpid()


@ray.remote
def hold_the_gil():
    re.match(r"(a+)+$", "a" * 64 + "b")  # catastrophic backtracking: C code that keeps the GIL


ranks = dict(ray.get([where.remote() for _ in range(6)], timeout=60))
if sys.argv[1] == "stop":
    victim = max(ranks)
    os.kill(ranks[victim], signal.SIGSTOP)
else:
    victim = min(ranks)  # (first fit: an idle job's next task goes to its first worker rank)
    hold_the_gil.remote()
    time.sleep(1.0)  # it runs now
print(f"VICTIM {victim} {ranks[victim]}", flush=True)
print("DRIVER_ENDS", time.monotonic(), flush=True)
