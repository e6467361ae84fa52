"""A Ctrl-C that lands in the middle of a runtime call on the driver is raised when the call is
over, never between two of its steps; and one during a long ``get`` still ends it at once.

1. ``remote()``: the SIGINT arrives right after the function is marked as sent to the workers and
   before it is sent. Raised there, every later call of the function failed ("the function never
   reached rank N"); now the first call raises KeyboardInterrupt as a whole and later calls run.
2. ``get()``: the SIGINT arrives right after the wanted ids are recorded as wanted and before the
   request (and the fetch of a large value another rank holds) is posted. Every value still
   arrives afterwards.
3. A ``get()`` on a task that sleeps: Ctrl-C raises KeyboardInterrupt within a second or two.
4. ``shutdown()``: the SIGINT arrives as the session is closed, before the loop stops (and, with
   worker ranks, before they are told the session ended). The session ends whole, then
   KeyboardInterrupt; a new ``init()`` runs tasks.

Each SIGINT comes from a wrapped set that sends it from inside the step: a deterministic stand-in
for a Ctrl-C at the worst moment.

    python ctrl_c_in_call.py            mpiexec -n 3 python ctrl_c_in_call.py
"""

import os
import signal
import threading
import time

import numpy

import hpcray as ray

ray.init(num_cpus=2)
from hpcray._private import runtime  # noqa: E402

client = runtime.current().client


class SignallingSet(set):
    """A set that sends this process a SIGINT from inside its first ``method`` call."""

    def arm(self, method):
        self.armed = method
        return self

    def _signal(self, method):
        if getattr(self, "armed", None) == method and threading.current_thread() is threading.main_thread():
            self.armed = None
            os.kill(os.getpid(), signal.SIGINT)

    def add(self, item):
        super().add(item)
        self._signal("add")

    def update(self, *items):
        super().update(*items)
        self._signal("update")


@ray.remote
def square(x):
    return x * x


@ray.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@ray.remote
def big(seconds):
    time.sleep(seconds)
    return numpy.ones(1 << 18)  # 2 MiB: kept where it was made, fetched when wanted


def interrupted(call):
    try:
        call()
    except KeyboardInterrupt:
        return True
    return False


# 1. remote(): the first call of a function sends it along
client.exported = SignallingSet(client.exported).arm("add")
assert interrupted(lambda: square.remote(3)), "the SIGINT was lost"
assert client.exported.armed is None
assert ray.get([square.remote(i) for i in range(8)], timeout=30) == [i * i for i in range(8)]

# 2. get(): the request for the values
refs = [square.remote(i) for i in range(8, 16)]
ray.wait(refs, num_returns=len(refs), timeout=30, fetch_local=False)
fresh = [nap.remote(0.2) for _ in range(3)] + [big.remote(0.2)]
client.want_values = SignallingSet(client.want_values).arm("update")
assert interrupted(lambda: ray.get(fresh + refs)), "the SIGINT was lost"
assert client.want_values.armed is None
values = ray.get(fresh + refs, timeout=30)
assert values[:3] == [0.2] * 3 and values[3].shape == (1 << 18,) and values[3].sum() == 1 << 18
assert values[4:] == [i * i for i in range(8, 16)]

# 3. a long get() ends at once
sleeper = nap.remote(60)
timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
timer.start()
started = time.monotonic()
assert interrupted(lambda: ray.get(sleeper)), "the SIGINT was lost"
took = time.monotonic() - started
assert took < 3.0, f"Ctrl-C ended get() after {took:.1f} s"
ray.cancel(sleeper)
assert ray.get(square.remote(5), timeout=30) == 25

# 4. shutdown(): the session is closed, the loop (and the worker ranks' sessions) not yet ended
close_session = runtime.close_session


def close_then_interrupt(session):
    close_session(session)
    os.kill(os.getpid(), signal.SIGINT)


runtime.close_session = close_then_interrupt
assert interrupted(ray.shutdown), "the SIGINT was lost"
runtime.close_session = close_session
assert not ray.is_initialized()
ray.init(num_cpus=2)
assert ray.get([square.remote(i) for i in range(4)], timeout=30) == [0, 1, 4, 9]
print(f"CTRL_C_IN_CALL_OK {took:.2f}", flush=True)
