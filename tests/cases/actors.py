"""Actors: Ray's test_actor / test_actor_advanced / test_threaded_actor / test_asyncio /
test_concurrency_group / test_get_or_create_actor / test_namespace checklist, in both modes."""

import asyncio
import gc
import os
import threading
import time

import hpcray as ray
from hpcray import exceptions
from hpcray._private.api import query

from .helpers import SignalActor, append_line, count_lines, raises, scratch_file, wait_for_condition


SLOW = "slow"


@ray.remote
class Counter:
    def __init__(self, start=0, *, step=1):
        self.value = start
        self.step = step

    def increment(self, times=1):
        self.value += self.step * times
        return self.value

    def read(self):
        return self.value

    def fail(self):
        raise KeyError("method failed")

    def where(self):
        ctx = ray.get_runtime_context()
        return {"actor": ctx.get_actor_id(), "pid": os.getpid(), "rank": ctx.get_rank(),
                "assigned": ctx.get_assigned_resources(), "task": ctx.get_task_id()}

    @ray.method(num_returns=2)
    def pair(self):
        return self.value, -self.value

    def echo(self, x):
        if isinstance(x, str) and x == SLOW:
            time.sleep(3.0)
        return x


@ray.remote
class Mortal:
    """Writes a line to ``path`` when its instance is dropped."""

    def __init__(self, path):
        self.path = path

    def ping(self):
        return "alive"

    def __del__(self):
        append_line(self.path)


def live_actors():
    return query("stats")["actors"]


def case_create_and_call_in_order():
    counter = Counter.remote(10, step=2)
    assert ray.get([counter.increment.remote() for _ in range(50)]) == list(range(12, 112, 2))
    assert ray.get(counter.read.remote()) == 110


def case_direct_instantiation_and_subclassing_raise():
    raises(TypeError, Counter, match=".remote()")

    def subclass():
        class Child(Counter):
            pass
    raises(TypeError, subclass)


def case_class_without_init_and_inherited_methods():
    class Base:
        greeting = "hi"

        def hello(self):
            return self.greeting

    @ray.remote
    class Child(Base):
        def shout(self):
            return self.hello().upper()

    child = Child.remote()
    assert ray.get([child.hello.remote(), child.shout.remote()]) == ["hi", "HI"]


def case_fifo_even_when_earlier_call_waits_on_argument():
    signal = SignalActor.remote()

    @ray.remote
    def gated(value):
        ray.get(signal.wait.remote())
        return value

    log = Counter.remote()
    first = log.echo.remote(gated.remote("first"))
    later = [log.increment.remote() for _ in range(3)]
    ready, _ = ray.wait(later, timeout=0.3)
    assert ready == []  # later calls wait behind the call whose argument is not ready
    ray.get(signal.send.remote())
    assert ray.get(first) == "first" and ray.get(later) == [1, 2, 3]


def case_num_returns_method_and_options():
    counter = Counter.remote(5)
    a, b = counter.pair.remote()
    assert ray.get([a, b]) == [5, -5]
    assert ray.get(counter.pair.options(num_returns=1).remote()) == (5, -5)


def case_handles_travel_into_tasks_actors_and_returns():
    counter = Counter.remote()

    @ray.remote
    def bump(handle, times):
        return ray.get(handle.increment.remote(times))

    @ray.remote
    class Owner:
        def __init__(self, handle):
            self.handle = handle

        def bump(self):
            return ray.get(self.handle.increment.remote(100))

        def give(self):
            return self.handle

        def make_child(self):
            child = Counter.remote(7)
            return ray.get(child.read.remote()) + ray.get(bump.remote(child, 1))

    assert ray.get(bump.remote(counter, 1)) == 1
    owner = Owner.remote(counter)
    assert ray.get(owner.bump.remote()) == 101
    returned = ray.get(owner.give.remote())
    assert ray.get(returned.read.remote()) == 101
    assert ray.get(owner.make_child.remote()) == 15


def case_method_error_keeps_actor_alive():
    counter = Counter.remote()
    raises(KeyError, ray.get, counter.fail.remote(), match="method failed")
    assert ray.get(counter.increment.remote()) == 1


def case_init_error_fails_every_call():
    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("init exploded")

        def method(self):
            return 1

    broken = Broken.remote()
    for _ in range(2):
        exc = raises(exceptions.ActorDiedError, ray.get, broken.method.remote(), match="init exploded")
        assert isinstance(exc, exceptions.RayActorError) and exc.actor_init_failed


def case_unknown_method_and_wrong_arity_raise_at_call():
    counter = Counter.remote()
    raises(AttributeError, lambda: counter.no_such_method)
    raises(TypeError, counter.increment.remote, 1, 2, 3)
    raises(TypeError, Counter.remote, 1, 2, 3)
    raises(TypeError, counter.read)
    raises(TypeError, counter.increment.remote, threading.Lock(), match="an argument of Counter.increment()")
    raises(TypeError, Counter.remote, threading.Lock(), match="an argument of Counter.__init__()")


def case_kill_fails_running_queued_and_later_calls():
    marker = scratch_file("kill-running")

    @ray.remote
    class Slow:
        def sleep(self, seconds, marker=None):
            if marker is not None:
                append_line(marker)
            time.sleep(seconds)
            return seconds

    slow = Slow.remote()
    assert ray.get(slow.sleep.remote(0)) == 0
    refs = [slow.sleep.remote(5, marker) for _ in range(4)]
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)  # one runs, three queued
    started = time.monotonic()
    ray.kill(slow)
    for ref in refs:
        raises(exceptions.RayActorError, ray.get, ref, timeout=10, match="kill")
    assert time.monotonic() - started < 3.0
    raises(exceptions.RayActorError, ray.get, slow.sleep.remote(0), timeout=10)
    raises(ValueError, ray.kill, "not an actor")


def case_kill_without_no_restart_restarts_a_restartable_actor():
    """Ray: ``kill(actor, no_restart=False)`` ends this instance and, with restarts left, starts
    a new one (``__init__`` with the original arguments; same handle and name); calls in flight
    fail; with no restart left, the actor is dead."""
    marker = scratch_file("kill-restart")

    @ray.remote
    class Slow:
        def __init__(self, start):
            self.value = start

        def add(self):
            self.value += 1
            return self.value

        def sleep(self, seconds):
            append_line(marker)
            time.sleep(seconds)

    slow = Slow.options(name="kill-restart", max_restarts=1).remote(10)
    assert ray.get(slow.add.remote()) == 11
    running = slow.sleep.remote(5)
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)
    ray.kill(slow, no_restart=False)
    raises(exceptions.RayActorError, ray.get, running, timeout=10, match="restarted")
    assert ray.get(slow.add.remote(), timeout=30) == 11  # a new instance: __init__(10) again
    assert ray.get(ray.get_actor("kill-restart").add.remote(), timeout=30) == 12
    ray.kill(slow, no_restart=False)  # no restart left: dead
    raises(exceptions.ActorDiedError, ray.get, slow.add.remote(), timeout=10, match="kill")
    never = Slow.remote(0)  # max_restarts=0 (the default): kill(no_restart=False) is final
    assert ray.get(never.add.remote()) == 1
    ray.kill(never, no_restart=False)
    raises(exceptions.RayActorError, ray.get, never.add.remote(), timeout=10)


def case_terminate_and_exit_actor_are_graceful():
    counter = Counter.remote()
    refs = [counter.increment.remote() for _ in range(5)]
    counter.__ray_terminate__.remote()
    assert ray.get(refs) == [1, 2, 3, 4, 5]
    raises(exceptions.RayActorError, ray.get, counter.read.remote(), timeout=10)

    @ray.remote
    class Quitter:
        def quit(self):
            ray.actor.exit_actor()

        def ping(self):
            return "pong"

    quitter = Quitter.remote()
    assert ray.get(quitter.ping.remote()) == "pong"
    raises(exceptions.RayActorError, ray.get, quitter.quit.remote(), timeout=10)
    raises(exceptions.RayActorError, ray.get, quitter.ping.remote(), timeout=10)
    raises(TypeError, ray.actor.exit_actor)


def case_actor_ends_when_last_handle_is_dropped():
    marker = scratch_file("del")
    gc.collect()
    mortal = Mortal.remote(marker)
    assert ray.get(mortal.ping.remote()) == "alive"
    del mortal
    gc.collect()
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=10)
    # a call on a handle that is dropped at once still runs
    assert ray.get(Mortal.remote(scratch_file("del2")).ping.remote()) == "alive"


def case_handle_held_by_pending_task_keeps_actor_alive():
    signal = SignalActor.remote()
    marker = scratch_file("del")

    @ray.remote
    def later(handle):
        ray.get(signal.wait.remote())
        return ray.get(handle[0].ping.remote())

    mortal = Mortal.remote(marker)
    ref = later.remote([mortal])  # nested: the task holds the handle until it runs
    del mortal
    gc.collect()
    time.sleep(0.5)
    assert count_lines(marker) == 0
    ray.get(signal.send.remote())
    assert ray.get(ref) == "alive"
    gc.collect()
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=10)


def case_detached_actor_survives_its_handles():
    name = f"detached-{time.time_ns()}"
    Counter.options(name=name, lifetime="detached").remote(3)
    gc.collect()
    time.sleep(0.3)
    handle = ray.get_actor(name)
    assert ray.get(handle.read.remote()) == 3
    ray.kill(handle)


def case_named_actors_and_namespaces():
    name = f"named-{time.time_ns()}"
    counter = Counter.options(name=name).remote(1)
    again = ray.get_actor(name)
    assert ray.get(again.increment.remote()) == 2
    assert name in ray.util.list_named_actors()
    assert {"name": name, "namespace": ray.get_runtime_context().namespace} in \
        ray.util.list_named_actors(all_namespaces=True)
    raises(ValueError, Counter.options(name=name).remote, match=name)
    raises(ValueError, ray.get_actor, f"missing-{name}")
    raises(ValueError, ray.get_actor, name, namespace="elsewhere")
    other = Counter.options(name=name, namespace="elsewhere").remote(100)
    assert ray.get(ray.get_actor(name, namespace="elsewhere").read.remote()) == 100
    ray.kill(other)
    ray.kill(counter)
    wait_for_condition(lambda: name not in ray.util.list_named_actors(), timeout=5)
    raises(ValueError, lambda: Counter.options(get_if_exists=True).remote())


def case_get_if_exists_races_to_one_actor():
    name = f"shared-{time.time_ns()}"

    signal = SignalActor.remote()

    @ray.remote
    def create_and_bump(hold):
        handle = Counter.options(name=name, get_if_exists=True).remote()
        value = ray.get(handle.increment.remote())
        if hold:  # keep this handle until every task has one: a named actor dies with its handles
            ray.get(signal.wait.remote())
        return value

    refs = [create_and_bump.remote(True) for _ in range(8)]
    wait_for_condition(lambda: name in ray.util.list_named_actors()
                       and ray.get(ray.get_actor(name).read.remote()) == 8, timeout=20)
    ray.get(signal.send.remote())
    values = ray.get(refs)
    assert sorted(values) == list(range(1, 9))  # one actor, however the race went
    keeper = Counter.options(name=name, get_if_exists=True).remote()
    values = ray.get([create_and_bump.remote(False) for _ in range(4)])
    final = ray.get(keeper.read.remote())
    assert final == max(values) and sorted(values) == list(range(final - 3, final + 1))
    ray.kill(keeper)


def case_threaded_actor_runs_calls_concurrently():
    @ray.remote(max_concurrency=4)
    class Threaded:
        def __init__(self, signal):
            self.signal = signal

        def block(self):
            ray.get(self.signal.wait.remote())
            return "released"

    signal = SignalActor.remote()
    threaded = Threaded.remote(signal)
    refs = [threaded.block.remote() for _ in range(4)]
    assert ray.wait(refs, timeout=0.3)[0] == []
    ray.get(signal.send.remote())
    assert ray.get(refs) == ["released"] * 4  # four calls were waiting at once


def case_results_are_not_held_behind_a_long_call():
    # results of a burst may wait to leave together (config.HOLD_S), but not behind a long call
    counter = Counter.remote()
    ray.get(counter.read.remote())
    for _ in range(3):
        quick = [counter.echo.remote(i) for i in range(50)]
        slow = counter.echo.remote(SLOW)  # sleeps 3 s when it runs (see Counter.echo)
        started = time.monotonic()
        assert ray.get(quick, timeout=30) == list(range(50))
        assert time.monotonic() - started < 2.0, "quick results waited for the slow call"
        assert ray.get(slow, timeout=30) == SLOW


def case_sync_actor_runs_one_call_at_a_time():
    @ray.remote
    class Serial:
        def __init__(self):
            self.active = 0
            self.peak = 0

        def work(self):
            self.active += 1
            self.peak = max(self.peak, self.active)
            time.sleep(0.01)
            self.active -= 1
            return self.peak

    serial = Serial.remote()
    assert max(ray.get([serial.work.remote() for _ in range(20)])) == 1


def case_async_actor_concurrency_and_await_ref():
    @ray.remote
    class AsyncActor:
        def __init__(self):
            self.active = 0
            self.peak = 0

        async def work(self, delay):
            self.active += 1
            self.peak = max(self.peak, self.active)
            await asyncio.sleep(delay)
            self.active -= 1
            return self.peak

        async def await_ref(self, refs):
            return await refs[0] + 1

        def sync_method(self):
            return "sync ok"

    actor = AsyncActor.remote()
    started = time.monotonic()
    peaks = ray.get([actor.work.remote(0.5) for _ in range(20)])
    assert max(peaks) > 1 and time.monotonic() - started < 5
    assert ray.get(actor.await_ref.remote([ray.put(41)])) == 42
    assert ray.get(actor.sync_method.remote()) == "sync ok"

    limited = AsyncActor.options(max_concurrency=2).remote()
    assert max(ray.get([limited.work.remote(0.05) for _ in range(8)])) == 2


def case_concurrency_groups_have_their_own_limits():
    @ray.remote(concurrency_groups={"io": 2, "compute": 1})
    class Grouped:
        def __init__(self):
            self.active = {"io": 0, "compute": 0}
            self.peak = {"io": 0, "compute": 0}

        @ray.method(concurrency_group="io")
        async def io(self):
            return await self._work("io")

        @ray.method(concurrency_group="compute")
        async def compute(self):
            return await self._work("compute")

        async def _work(self, group):
            self.active[group] += 1
            self.peak[group] = max(self.peak[group], self.active[group])
            await asyncio.sleep(0.05)
            self.active[group] -= 1
            return dict(self.peak)

    grouped = Grouped.remote()
    results = ray.get([grouped.io.remote() for _ in range(6)] + [grouped.compute.remote() for _ in range(4)])
    final = results[-1]
    assert max(r["io"] for r in results) == 2 and max(r["compute"] for r in results) == 1, final
    raises(ValueError, lambda: Grouped.options(concurrency_groups={"x": 1}))


def case_max_pending_calls():
    signal = SignalActor.remote()

    @ray.remote(max_pending_calls=2)
    class Limited:
        def block(self, signal):
            ray.get(signal.wait.remote())
            return 1

    limited = Limited.remote()
    refs = [limited.block.remote(signal) for _ in range(2)]
    raises(exceptions.PendingCallsLimitExceeded, limited.block.remote, signal)
    ray.get(signal.send.remote())
    assert ray.get(refs) == [1, 1]
    wait_for_condition(lambda: ray.get(limited.block.remote(signal)) == 1, timeout=10)


def case_default_actor_holds_no_cpu_explicit_one_does():
    total = ray.cluster_resources()["CPU"]
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == total, timeout=10)
    light = [Counter.remote() for _ in range(3)]
    ray.get([a.read.remote() for a in light])
    assert ray.available_resources().get("CPU", 0) == total
    views = ray.get([a.where.remote() for a in light])
    assert all("CPU" not in v["assigned"] for v in views)
    heavy = Counter.options(num_cpus=1).remote()
    assert ray.get(heavy.where.remote())["assigned"] == {"CPU": 1.0}
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == total - 1, timeout=10)
    ray.kill(heavy)
    wait_for_condition(lambda: ray.available_resources().get("CPU", 0) == total, timeout=10)


def case_runtime_context_in_actor():
    counter = Counter.remote()
    view = ray.get(counter.where.remote())
    assert isinstance(view["actor"], str) and view["actor"] == counter._actor_id.hex()
    assert isinstance(view["task"], str)

    @ray.remote
    class SelfCaller:
        def me(self):
            return ray.get_runtime_context().current_actor

        def value(self):
            return "self"

    caller = SelfCaller.remote()
    myself = ray.get(caller.me.remote())
    assert ray.get(myself.value.remote()) == "self"


def case_many_idle_actors():
    @ray.remote
    class Tiny:
        def rank(self):
            return ray.get_runtime_context().get_rank()

    actors = [Tiny.remote() for _ in range(1000)]
    ranks = ray.get([a.rank.remote() for a in actors])
    assert len(ranks) == 1000
    assert live_actors() >= 1000
    del actors
    gc.collect()
    wait_for_condition(lambda: live_actors() < 100, timeout=30)


def case_ten_thousand_actors_across_the_job():
    @ray.remote
    class Cell:
        def __init__(self, index):
            self.index = index

        def value(self):
            return self.index

    cells = [Cell.remote(i) for i in range(10_000)]
    assert ray.get([c.value.remote() for c in cells]) == list(range(10_000))
    assert live_actors() >= 10_000
    del cells
    gc.collect()
    wait_for_condition(lambda: live_actors() < 100, timeout=60)


def case_retries_for_actor_methods():
    counter = scratch_file("retry")

    class Flaky(Exception):
        pass

    @ray.remote(max_task_retries=5, retry_exceptions=[Flaky])
    class Retrying:
        def always(self, path):
            append_line(path)
            raise Flaky("again")

        @ray.method(max_task_retries=1)
        def once_more(self, path):
            append_line(path)
            raise Flaky("again")

    actor = Retrying.remote()
    raises(Flaky, ray.get, actor.always.remote(counter))
    assert count_lines(counter) == 6  # 1 + max_task_retries
    second = scratch_file("retry")
    raises(Flaky, ray.get, actor.always.options(retry_exceptions=False).remote(second))
    assert count_lines(second) == 1
    third = scratch_file("retry")
    raises(Flaky, ray.get, actor.once_more.remote(third))
    assert count_lines(third) == 2  # the method decorator wins over the class


def case_actor_pool():
    from hpcray.util import ActorPool
    actors = [Counter.remote() for _ in range(3)]
    pool = ActorPool(actors)
    assert list(pool.map(lambda a, v: a.echo.remote(v * 2), range(10))) == [v * 2 for v in range(10)]
    assert sorted(pool.map_unordered(lambda a, v: a.echo.remote(v), range(7))) == list(range(7))
    for v in range(5):
        pool.submit(lambda a, x: a.echo.remote(x), v)
    assert [pool.get_next() for _ in range(5)] == list(range(5))
    assert not pool.has_next()
    raises(StopIteration, pool.get_next)
    idle = pool.pop_idle()
    assert idle is not None and pool.has_free()
    pool.push(idle)
    raises(ValueError, pool.push, idle)

    @ray.remote
    class Sleeper:
        def nap(self, seconds):
            time.sleep(seconds)
            return seconds

    slow_pool = ActorPool([Sleeper.remote()])
    slow_pool.submit(lambda a, v: a.nap.remote(v), 2)
    raises(TimeoutError, slow_pool.get_next, timeout=0.1)
    assert slow_pool.get_next() == 2


def case_queue():
    from hpcray.util.queue import Empty, Full, Queue
    import queue as stdlib_queue
    q = Queue(maxsize=3)
    assert q.empty() and q.qsize() == 0 and not q.full()
    q.put(1)
    q.put_nowait(2)
    q.put(3)
    assert q.full() and len(q) == 3
    raises(Full, q.put_nowait, 4)
    raises(Full, q.put, 4, timeout=0.2)
    assert issubclass(Full, stdlib_queue.Full) and issubclass(Empty, stdlib_queue.Empty)
    assert [q.get(), q.get_nowait(), q.get(timeout=1)] == [1, 2, 3]
    raises(Empty, q.get_nowait)
    raises(Empty, q.get, timeout=0.2)
    q.put_nowait_batch([4, 5])
    raises(Full, q.put_nowait_batch, [6, 7])
    assert q.get_nowait_batch(2) == [4, 5]
    raises(Empty, q.get_nowait_batch, 1)

    @ray.remote
    def producer(queue, n):
        for i in range(n):
            queue.put(i)
        return n

    big = Queue()
    done = producer.remote(big, 20)
    assert [big.get(timeout=10) for _ in range(20)] == list(range(20))
    assert ray.get(done) == 20
