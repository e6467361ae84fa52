"""Ctrl-C lands again and again while the driver waits in get() (running the loop's turns itself,
comm.CommLoop.lend); the program catches KeyboardInterrupt each time and goes on. No message may
be lost: afterwards every task's result arrives, and the job ends normally.

    python interrupts.py            mpiexec -n 3 python interrupts.py
"""

import os
import signal
import threading
import time

import hpcray as ray

ray.init(num_cpus=2)


@ray.remote
def square(x):
    return x * x


def interrupt_now_and_then(stop: threading.Event) -> None:
    while not stop.wait(0.003):
        os.kill(os.getpid(), signal.SIGINT)


refs = []
interrupts = 0
stop = threading.Event()
thread = threading.Thread(target=interrupt_now_and_then, args=(stop,), daemon=True)
thread.start()
deadline = time.monotonic() + 2.0
while time.monotonic() < deadline:
    try:  # a KeyboardInterrupt may land anywhere here, as Ctrl-C would
        batch = []
        for i in range(50):
            batch.append(square.remote(i))
        ray.get(batch)
    except KeyboardInterrupt:
        interrupts += 1
    refs.extend((ref, i * i) for i, ref in enumerate(batch))
stop.set()
thread.join()
time.sleep(0.05)  # a last SIGINT on its way lands here, not in the final get
values = ray.get([ref for ref, _ in refs], timeout=60)
assert values == [value for _, value in refs]
assert interrupts > 0, "no interrupt landed in get()"
print(f"INTERRUPTS {interrupts} TASKS {len(refs)}", flush=True)
