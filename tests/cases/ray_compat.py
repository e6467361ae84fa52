"""Ray semantics a Ray program relies on (issue: Ray programs unchanged): the runtime context,
``_remote``, actor class attributes, Ray's checks of placement-group calls, ActorPool.map's
submission, the message for subclassing an actor class."""

import sqlite3
import threading
import time
import warnings

import hpcray as ray
from hpcray import exceptions
from hpcray.util import ActorPool
from hpcray.util.placement_group import placement_group, remove_placement_group
from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .helpers import SignalActor, append_line, count_lines, raises, scratch_file, wait_for_condition

ENV = {"HPCRAY_NUM_CPUS": "2"}  # per worker rank under MPI; the process's CPUs on a single rank


@ray.remote
def task_context():
    ctx = ray.get_runtime_context()
    return (ctx.get_task_name(), ctx.get_task_function_name(), sorted(ctx.get()),
            ctx.task_id.hex() == ctx.get_task_id(), ctx.actor_id, ctx.is_canceled())


@ray.remote
class Model:
    SCALE = 3

    @staticmethod
    def helper(x):
        return x * Model.SCALE  # the decorated class, seen from inside the actor

    def __init__(self):
        self.made_by = ray.get_runtime_context().get_task_function_name()

    def context(self):
        ctx = ray.get_runtime_context()
        return (ctx.get_task_name(), ctx.get_task_function_name(), self.made_by, sorted(ctx.get()),
                ctx.actor_id.hex() == ctx.get_actor_id())

    def scaled(self, x):
        return Model.helper(x) + Model.SCALE


def case_runtime_context_names_ids_and_keys():
    ctx = ray.get_runtime_context()
    assert sorted(ctx.get()) == ["job_id", "namespace", "node_id"]  # the driver: no task, no actor
    assert ctx.get_task_name() is None and ctx.get_task_function_name() is None
    assert ctx.job_id.hex() == ctx.get_job_id() and ctx.node_id.hex() == ctx.get_node_id()
    assert ctx.task_id is None and ctx.actor_id is None and ctx.is_canceled() is False
    name, function, keys, same_id, actor, cancelled = ray.get(task_context.remote())
    assert name == "task_context" and function.endswith("ray_compat.task_context"), function
    assert keys == ["job_id", "namespace", "node_id", "task_id"] and same_id and actor is None
    assert cancelled is False
    assert ray.get(task_context.options(name="renamed").remote())[:2] == \
        ("renamed", function)  # the name is the option's, the function stays the function
    model = Model.remote()
    name, function, made_by, keys, same_actor = ray.get(model.context.remote())
    assert name == "Model.context" and function.endswith("ray_compat.Model.context"), (name, function)
    assert made_by.endswith("ray_compat.Model.__init__"), made_by
    assert keys == ["actor_id", "job_id", "namespace", "node_id", "task_id"] and same_actor


def case_is_canceled_inside_a_cancelled_task():
    marker = scratch_file("is-canceled")

    @ray.remote
    def waits(path):
        try:
            append_line(path, "started")
            for _ in range(3000):  # (a cancel lands between two short sleeps)
                time.sleep(0.01)
        except KeyboardInterrupt:
            append_line(path, f"canceled={ray.get_runtime_context().is_canceled()}")
            raise

    ref = waits.remote(marker)
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)
    ray.cancel(ref)
    raises(exceptions.TaskCancelledError, ray.get, ref, timeout=20)
    wait_for_condition(lambda: count_lines(marker) == 2, timeout=20)
    assert open(marker).read().splitlines()[1] == "canceled=True"


def case_underscore_remote_takes_args_kwargs_and_options():
    @ray.remote
    def add(a, b=0):
        return a + b

    assert ray.get(add._remote(args=[1], kwargs={"b": 2}, num_cpus=0.5)) == 3
    assert ray.get(add._remote(args=[5])) == 5
    model = Model._remote(args=[], kwargs={}, num_cpus=0)
    assert ray.get(model.scaled.remote(2)) == 9


def case_actor_class_attributes_and_static_methods():
    assert Model.SCALE == 3 and Model.helper(2) == 6
    raises(AttributeError, getattr, Model, "scaled", match="actor method")
    raises(AttributeError, getattr, Model, "missing")
    assert ray.get(Model.remote().scaled.remote(1)) == 6  # Model.helper and Model.SCALE inside


def case_subclassing_an_actor_class_is_rays_error():
    try:
        class Derived(Model):
            pass
        raise AssertionError("no error")
    except exceptions.ActorClassInheritanceException as exc:
        assert isinstance(exc, TypeError)
        assert str(exc).startswith("Attempted to define subclass 'Derived' of actor class 'Model'. "
                                   "Inheriting from actor classes is not currently supported."), exc


def case_placement_group_calls_are_checked_as_ray_checks_them():
    raises(ValueError, placement_group, [{"CPU": 1, "bundle": 1}], match="reserved")
    group = placement_group([{"CPU": 1}])
    ray.get(group.ready(), timeout=30)
    try:
        in_group = PlacementGroupSchedulingStrategy(group)
        raises(ValueError, task_context.options(num_cpus=2, scheduling_strategy=in_group).remote,
               match="cannot fit into any bundles for the placement group")
        raises(ValueError, Model.options(num_gpus=1, scheduling_strategy=in_group).remote,
               match="Cannot schedule Model with the placement group")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ref = task_context.options(placement_group=group).remote()
        assert any(issubclass(w.category, DeprecationWarning) and "placement_group parameter is deprecated"
                   in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert ray.get(ref, timeout=30)[0] == "task_context"
    finally:
        remove_placement_group(group)


def case_actor_pool_map_submits_at_once():
    marker = scratch_file("pool-map")

    @ray.remote(num_cpus=0)
    class Worker:
        def work(self, value):
            append_line(marker)
            return value * 10

    pool = ActorPool([Worker.remote(), Worker.remote()])
    results = pool.map(lambda actor, value: actor.work.remote(value), [1, 2])
    wait_for_condition(lambda: count_lines(marker) == 2, timeout=20)  # before anyone iterates
    assert list(results) == [10, 20]
    unordered = pool.map_unordered(lambda actor, value: actor.work.remote(value), [3, 4])
    wait_for_condition(lambda: count_lines(marker) == 4, timeout=20)
    assert sorted(unordered) == [30, 40]


@ray.remote
def released_by(signal):
    ray.get(signal.wait.remote())
    return "released"


@ray.remote
class Recorder:
    def record(self, value):
        return value


@ray.remote(max_concurrency=2)
class Caller:
    def call_with(self, target, holder):
        return [target.record.remote(holder[0])]  # waits for its argument at the scheduler

    def call_plain(self, target):
        return ray.get(target.record.remote("plain"), timeout=20)


def case_actor_calls_are_ordered_per_caller_not_per_rank():
    """Two callers on one rank (two calls of one actor): the second's call to a third actor does
    not wait behind the first's, whose argument is not ready."""
    signal = SignalActor.remote()
    target, caller = Recorder.remote(), Caller.remote()
    held = ray.get(caller.call_with.remote(target, [released_by.remote(signal)]))
    assert ray.get(caller.call_plain.remote(target), timeout=30) == "plain"
    ready, _ = ray.wait(held, timeout=0.2)
    assert not ready  # still waiting for its argument
    ray.get(signal.send.remote())
    assert ray.get(held[0], timeout=20) == "released"


@ray.remote(concurrency_groups={"slow": 1, "fast": 1})
class Grouped:
    @ray.method(concurrency_group="slow")
    def blocked(self, signal):
        return ray.get(signal.wait.remote())

    @ray.method(concurrency_group="fast")
    def quick(self):
        return "fast"

    def default(self):
        return "default"


def case_a_call_blocked_in_one_concurrency_group_does_not_hold_up_another():
    signal = SignalActor.remote()
    grouped = Grouped.remote()
    blocked = grouped.blocked.remote(signal)
    time.sleep(0.3)  # (it runs, blocked)
    assert ray.get(grouped.quick.remote(), timeout=20) == "fast"
    assert ray.get(grouped.default.remote(), timeout=20) == "default"
    ready, _ = ray.wait([blocked], timeout=0.1)
    assert not ready
    ray.get(signal.send.remote())
    ray.get(blocked, timeout=20)


@ray.remote
class ThreadBound:
    """State tied to the thread that made it: a threading.local and a sqlite connection, which
    sqlite lets only its own thread use."""

    def __init__(self):
        self.local = threading.local()
        self.local.value = "made in __init__"
        self.db = sqlite3.connect(":memory:")
        self.db.execute("create table seen (x)")
        self.init_thread = threading.get_ident()

    def step(self, x):
        self.db.execute("insert into seen values (?)", (x,))
        return threading.get_ident() == self.init_thread, getattr(self.local, "value", None)

    def count(self):
        return self.db.execute("select count(*) from seen").fetchone()[0]


@ray.remote
def hold_a_thread(seconds):
    time.sleep(seconds)
    return seconds


def case_a_sync_actor_runs_every_call_on_its_init_thread():
    actors = [ThreadBound.remote() for _ in range(2)]
    ray.get([a.count.remote() for a in actors], timeout=30)
    busy = [hold_a_thread.remote(0.5) for _ in range(2)]  # other work takes the rank's other threads
    steps = ray.get([a.step.remote(i) for i in range(5) for a in actors], timeout=30)
    assert steps == [(True, "made in __init__")] * 10, steps
    assert ray.get([a.count.remote() for a in actors], timeout=30) == [5, 5]
    ray.get(busy, timeout=30)


@ray.remote(max_concurrency=3)
class ThreadPoolActor:
    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.calls_per_thread = {}

    def work(self, seconds):
        time.sleep(seconds)
        self.local.calls = getattr(self.local, "calls", 0) + 1
        with self.lock:
            self.calls_per_thread[threading.get_ident()] = self.local.calls
        return threading.get_ident()

    def counts(self):
        with self.lock:
            return dict(self.calls_per_thread)


def case_a_threaded_actor_runs_its_calls_on_at_most_max_concurrency_threads():
    pool = ThreadPoolActor.remote()
    busy = [hold_a_thread.remote(0.3) for _ in range(2)]
    idents = ray.get([pool.work.remote(0.02) for _ in range(30)], timeout=60)
    counts = ray.get(pool.counts.remote(), timeout=30)
    assert 2 <= len(set(idents)) <= 3, len(set(idents))  # concurrent, within its own 3 threads
    assert set(counts) == set(idents) and sum(counts.values()) == 30, counts  # thread-locals last
    ray.get(busy, timeout=30)


@ray.remote
def counted(name, steps):
    from hpcray.experimental.tqdm_ray import tqdm
    for _ in tqdm(range(steps), desc=name, flush_interval_s=0):
        pass
    return name


@ray.remote
class Counting:
    def __init__(self):
        from hpcray.experimental.tqdm_ray import tqdm
        self.bar = tqdm(desc="actor bar", total=10, position=0, flush_interval_s=0)

    def step(self, n):
        self.bar.update(n)
        if self.bar.n >= 10:
            self.bar.close()
        return self.bar.n


def case_tqdm_ray_bars_from_tasks_and_actors_reach_the_driver():
    from hpcray.experimental import tqdm_ray
    names = ray.get([counted.remote(f"bar {i}", 5 + i) for i in range(3)], timeout=30)
    counter = Counting.remote()
    assert ray.get([counter.step.remote(4), counter.step.remote(6)], timeout=30) == [4, 10]

    def arrived():
        seen = {s["desc"]: s for s in tqdm_ray.instance().snapshot().values()}
        return all(name in seen and seen[name]["closed"] for name in names + ["actor bar"])
    wait_for_condition(arrived, timeout=10)
    seen = {s["desc"]: s for s in tqdm_ray.instance().snapshot().values()}
    for i, name in enumerate(names):
        assert (seen[name]["x"], seen[name]["total"]) == (5 + i, 5 + i), seen[name]
    assert (seen["actor bar"]["x"], seen["actor bar"]["total"], seen["actor bar"]["pos"]) == (10, 10, 0)
    raises(ValueError, lambda: tqdm_ray.tqdm(total=3, flush_interval_s=-1), match="flush_interval_s")
