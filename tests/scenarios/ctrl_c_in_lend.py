"""A Ctrl-C that lands inside the driver's lend() at its most fragile moment: right after the
thread took the loop's turn lock and before it became the guest. It is raised once lend() is over;
the loop's locks are free afterwards and the session goes on. (Before, the KeyboardInterrupt left
the turn lock taken, and the job hung at exit: seen once in ten runs of interrupts.py.)

The lock is wrapped so that the main thread's first acquire sends this process the SIGINT:
a deterministic stand-in for a Ctrl-C that arrives a few bytecodes later than usual.

    python ctrl_c_in_lend.py            mpiexec -n 3 python ctrl_c_in_lend.py
"""

import os, signal, threading
import hpcray as ray
ray.init(num_cpus=1)
from hpcray._private import runtime
loop = runtime.current().loop


class SignallingLock:
    """The turn lock; the main thread's first acquire sends this process a SIGINT right after
    taking it: the moment before the taker becomes the loop's guest."""

    def __init__(self, lock):
        self.lock = lock
        self.armed = True

    def acquire(self, *args):
        got = self.lock.acquire(*args)
        if got and self.armed and threading.current_thread() is threading.main_thread():
            self.armed = False
            os.kill(os.getpid(), signal.SIGINT)
        return got

    def release(self):
        self.lock.release()

    def locked(self):
        return self.lock.locked()


@ray.remote
def add_one(x):
    return x + 1


ray.get(add_one.remote(0))
loop.lending.turns = SignallingLock(loop.lending.turns)
interrupted = False
try:
    ray.get(add_one.remote(1))
except KeyboardInterrupt:
    interrupted = True
assert interrupted, "the SIGINT was lost"
assert not loop.lending.turns.armed
assert not loop.lending.turns.locked() and not loop.lending._gate.locked(), "a Ctrl-C left the loop's locks taken"
assert ray.get([add_one.remote(i) for i in range(10)], timeout=30) == list(range(1, 11))
print("CTRL_C_IN_LEND_OK", flush=True)
