"""The failure model: every user error that reaches a pool thread, an actor's event loop, a loop
turn or a user callback becomes an error on the refs it concerns, and the runtime keeps working.
Both launch modes (see conftest.py)."""

import asyncio
import multiprocessing
import threading
import time

import hpcray as ray
from hpcray import exceptions

from .helpers import raises


def _refuse_to_rebuild():
    raise RuntimeError("this object cannot be rebuilt here")


class Unbuildable:
    """Pickles fine; unpickling it anywhere raises."""

    def __reduce__(self):
        return (_refuse_to_rebuild, ())


class NeedsTwo(Exception):
    def __init__(self, first, second):  # pickle rebuilds exceptions from args: (first,) fails
        super().__init__(first)
        self.second = second


@ray.remote
def square(x):
    return x * x


def runtime_still_works():
    assert ray.get([square.remote(i) for i in range(16)], timeout=30) == [i * i for i in range(16)]


def case_function_that_cannot_be_unpickled_fails_its_task():
    poison = Unbuildable()

    @ray.remote
    def closes_over_poison():
        return poison

    for _ in range(3):  # again and again: the pool threads that met it still serve
        started = time.monotonic()
        exc = raises(exceptions.RayError, ray.get, closes_over_poison.remote(), timeout=20)
        assert not isinstance(exc, exceptions.GetTimeoutError), exc
        assert time.monotonic() - started < 10
        assert "closes_over_poison" in str(exc) and "cannot be rebuilt" in str(exc), str(exc)
    runtime_still_works()

    @ray.remote
    class Holder:
        def __init__(self):
            self.poison = poison

        def ping(self):
            return "pong"

    holder = Holder.remote()
    exc = raises(exceptions.RayActorError, ray.get, holder.ping.remote(), timeout=20)
    assert "cannot be rebuilt" in str(exc), str(exc)
    runtime_still_works()


def case_argument_that_cannot_be_unpickled_fails_the_call():
    @ray.remote
    def takes(value):
        return "ran"

    @ray.remote
    class Taker:
        def __init__(self, value=None):
            self.value = value

        def take(self, value):
            return "ran"

    exc = raises(exceptions.RayTaskError, ray.get, takes.remote(Unbuildable()), timeout=20)
    assert "takes" in str(exc) and "cannot be rebuilt" in str(exc), str(exc)
    taker = Taker.remote()
    exc = raises(exceptions.RayTaskError, ray.get, taker.take.remote(Unbuildable()), timeout=20)
    assert "cannot be rebuilt" in str(exc)
    assert ray.get(taker.take.remote(1), timeout=20) == "ran"  # the actor lives on
    broken = Taker.remote(Unbuildable())
    exc = raises(exceptions.RayActorError, ray.get, broken.take.remote(1), timeout=20)
    assert "cannot be rebuilt" in str(exc), str(exc)
    runtime_still_works()


def case_return_value_that_cannot_be_unpickled_by_the_caller():
    @ray.remote
    def gives():
        return Unbuildable()

    ref = gives.remote()
    exc = raises(exceptions.RaySystemError, ray.get, ref, timeout=20)
    assert ref.hex() in str(exc) and "cannot be rebuilt" in str(exc), str(exc)
    exc = raises(exceptions.RaySystemError, ray.get, ref, timeout=20)  # again: the same answer
    runtime_still_works()


def case_exception_whose_init_needs_more_arguments():
    @ray.remote
    def fails():
        raise NeedsTwo("first part", "second part")

    exc = raises(exceptions.RayTaskError, ray.get, fails.remote(), timeout=20)
    assert not isinstance(exc, TypeError), type(exc).__mro__
    text = str(exc)
    assert "fails" in text and "NeedsTwo" in text and "first part" in text and "Traceback" in text, text
    runtime_still_works()


def case_memory_error_is_catchable_as_memory_error():
    @ray.remote
    def runs_out():
        raise MemoryError("out of memory on purpose")

    exc = raises(MemoryError, ray.get, runs_out.remote(), timeout=20)
    assert isinstance(exc, exceptions.RayTaskError) and "on purpose" in str(exc)


def case_awaiting_a_ref_that_times_out_leaves_it_awaitable():
    @ray.remote
    def slow():
        time.sleep(1.0)
        return "late"

    async def main():
        ref = slow.remote()
        try:
            await asyncio.wait_for(ref.as_future(), 0.1)  # cancels the future it waited on
            raise AssertionError("wait_for did not time out")
        except asyncio.TimeoutError:
            pass
        return await ref, await asyncio.wait_for(ref.as_future(), 20)

    assert asyncio.run(main()) == ("late", "late")
    runtime_still_works()


def case_async_actor_init_runs_with_its_event_loop():
    @ray.remote
    class Looping:
        def __init__(self):
            self.loop = asyncio.get_event_loop()
            self.background = self.loop.create_task(asyncio.sleep(0, result="started in __init__"))

        async def same_loop(self):
            return asyncio.get_running_loop() is self.loop, await self.background

    actor = Looping.remote()
    assert ray.get(actor.same_loop.remote(), timeout=20) == (True, "started in __init__")


def case_init_inside_a_task_returns_at_once():
    @ray.remote
    def reinit():
        started = time.monotonic()
        ray.init(ignore_reinit_error=True)
        try:
            ray.init()
            second = "no error"
        except RuntimeError as exc:
            second = str(exc)
        return time.monotonic() - started, second

    elapsed, second = ray.get(reinit.remote(), timeout=20)
    assert elapsed < 2 and "twice" in second, (elapsed, second)


def case_a_blocking_done_callback_does_not_stop_progress():
    release = threading.Event()
    ran_in = []

    def blocking_callback(future):
        ran_in.append(threading.current_thread().name)
        release.wait(20)

    @ray.remote
    def later():
        time.sleep(0.5)
        return "done"

    try:
        later.remote().future().add_done_callback(blocking_callback)  # (added before it is done)
        deadline = time.monotonic() + 20
        while not ran_in and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran_in, "the callback never ran"
        started = time.monotonic()
        runtime_still_works()  # while the callback still blocks
        assert time.monotonic() - started < 10
        assert ran_in[0].startswith("hpcray-futures"), ran_in  # not a loop turn, not the caller
    finally:
        release.set()


def case_multiprocessing_fork_pool_inside_tasks():
    @ray.remote
    def pool_sum(n):
        with multiprocessing.get_context("fork").Pool(2) as pool:
            return sum(pool.map(abs, range(-n, n)))

    for _ in range(3):
        assert ray.get([pool_sum.remote(10) for _ in range(4)], timeout=60) == [100] * 4


def case_a_raising_done_callback_leaves_later_callbacks_running():
    @ray.remote
    def later(value):
        time.sleep(0.3)
        return value

    def exits(future):
        raise SystemExit("a done-callback that exits")

    first = later.remote(1).future()
    first.add_done_callback(exits)  # (added while pending: it runs on the futures thread)
    assert first.result(timeout=20) == 1
    got = []
    done = threading.Event()
    second = later.remote(2).future()
    second.add_done_callback(lambda future: (got.append(future.result()), done.set()))
    assert done.wait(20) and got == [2]
