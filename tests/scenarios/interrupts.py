"""Ctrl-C lands again and again while the driver submits tasks and waits in get() (running the
loop's turns itself, comm.CommLoop.lend); the program catches KeyboardInterrupt each time and goes
on. No message may be lost: afterwards every task's result arrives, and the job ends normally.

One SIGINT per round, at a random moment while the round submits and waits; each round waits for
its signal to land inside its ``try``, so the program itself is never interrupted elsewhere.

    python interrupts.py            mpiexec -n 3 python interrupts.py
"""

import os
import random
import signal
import threading
import time

import hpcray as ray

ray.init(num_cpus=2)


@ray.remote
def square(x):
    return x * x


armed = threading.Event()
fired = threading.Event()
stop = threading.Event()


def interrupt_once_per_round() -> None:
    while not stop.is_set():
        if armed.wait(0.05):
            armed.clear()
            time.sleep(random.uniform(0.0, 0.004))
            os.kill(os.getpid(), signal.SIGINT)
            fired.set()


thread = threading.Thread(target=interrupt_once_per_round, daemon=True)
thread.start()
refs = []
in_work = 0
deadline = time.monotonic() + 2.0
while time.monotonic() < deadline:
    batch = []
    finished = False
    armed.set()
    try:
        for i in range(50):
            batch.append((square.remote(i), i * i))
        ray.get([ref for ref, _ in batch])
        finished = True
        fired.wait()
        time.sleep(1.0)  # the signal lands here at the latest
        raise AssertionError("the SIGINT did not arrive")
    except KeyboardInterrupt:
        in_work += not finished
    fired.clear()
    refs.extend(batch)
stop.set()
thread.join()
values = ray.get([ref for ref, _ in refs], timeout=60)
assert values == [value for _, value in refs]
assert in_work > 0, "no interrupt landed in remote() or get()"
print(f"INTERRUPTS_IN_WORK {in_work} TASKS {len(refs)}", flush=True)
