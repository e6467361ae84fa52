"""Tasks and objects: Ray's test_basic / test_advanced checklist, run in both launch modes."""

import asyncio
import collections
import dataclasses
import os
import pickle
import time

import numpy as np

import hpcray as ray
from hpcray import exceptions

from .helpers import raises, skip, wait_for_condition

Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Record:
    name: str
    values: list


class Custom:
    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Custom) and other.value == self.value


@ray.remote
def identity(x):
    return x


@ray.remote
def add(a, b=10, *rest, scale=1, **extra):
    return (a + b + sum(rest)) * scale + sum(extra.values())


def case_put_get_roundtrip():
    values = [1, 2.5, "text", b"bytes", None, True, (1, 2), [1, [2, [3]]], {"a": {"b": 1}},
              Point(1, 2), Record("r", [1, 2]), Custom(7), int, {1, 2}, np.arange(10),
              np.zeros((3, 4), dtype=np.float32), np.array([], dtype=np.int64),
              np.arange(20).reshape(4, 5)[:, 1::2], {"arr": [np.ones(5), np.eye(2)]}]
    for value in values:
        for got in (ray.get(ray.put(value)), ray.get(identity.remote(value))):
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and np.array_equal(got, value)
            elif isinstance(value, dict) and "arr" in value:
                assert all(np.array_equal(a, b) for a, b in zip(got["arr"], value["arr"]))
            else:
                assert got == value, (got, value)
    square = ray.get(ray.put(lambda x: x * x))
    assert square(4) == 16


def case_put_large_and_mutation_after_put():
    array = np.arange(3_000_000, dtype=np.float64)
    ref = ray.put(array)
    array[0] = -1.0  # a put takes a snapshot
    assert ray.get(ref)[0] == 0.0
    assert ray.get(identity.remote(ref)).sum() == np.arange(3_000_000, dtype=np.float64).sum()


def case_put_objectref_raises():
    ref = ray.put(1)
    raises(TypeError, ray.put, ref)


def case_arguments_kwargs_defaults_varargs():
    assert ray.get(add.remote(1)) == 11
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote(1, 2, 3, 4, scale=2)) == 20
    assert ray.get(add.remote(a=1, b=1, extra=5)) == 7


def case_wrong_arity_raises_at_submit():
    @ray.remote
    def two(a, b):
        return a + b
    raises(TypeError, two.remote, 1)
    raises(TypeError, two.remote, 1, 2, 3)
    raises(TypeError, two.remote, 1, c=2)


def case_direct_call_raises():
    exc = raises(TypeError, identity, 1)
    assert "remote()" in str(exc)


def case_num_returns():
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    @ray.remote(num_returns=0)
    def nothing():
        return None

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs) == [1, 2, 3]
    assert nothing.remote() is None
    two = ray.remote(num_returns=2)(lambda: (4, 5))
    x, y = two.remote()
    assert ray.get([x, y]) == [4, 5]

    @ray.remote(num_returns=2)
    def wrong():
        return 1, 2, 3
    r1, r2 = wrong.remote()
    raises(ValueError, ray.get, r1)


def case_options_override_decorator():
    @ray.remote(num_returns=2)
    def pair():
        return 1, 2
    assert ray.get(pair.options(num_returns=1).remote()) == (1, 2)
    assert len(pair.remote()) == 2


def case_lambda_closure_and_main_classes():
    factor = 3
    closure = ray.remote(lambda x: x * factor)
    assert ray.get(closure.remote(2)) == 6

    @ray.remote
    def make_class():
        class Local:
            def hello(self):
                return "hi"
        return Local

    cls = ray.get(make_class.remote())
    assert cls().hello() == "hi"


def case_remote_calls_function_defined_later():
    @ray.remote
    def outer(x):
        return ray.get(later.remote(x)) + 1

    @ray.remote
    def later(x):
        return x * 10

    assert ray.get(outer.remote(2)) == 21


def case_top_level_refs_resolved_nested_stay_refs():
    ref = ray.put(41)

    @ray.remote
    def inspect_args(top, nested, kw=None):
        return (top, type(nested[0]).__name__, ray.get(nested[0]), kw)

    top, kind, value, kw = ray.get(inspect_args.remote(ref, [ref], kw=ref))
    assert (top, kind, value, kw) == (41, "ObjectRef", 41, 41)


def case_chained_tasks():
    ref = identity.remote(1)
    for _ in range(20):
        ref = add.remote(ref, 1)
    assert ray.get(ref) == 21


def case_recursive_tree_does_not_deadlock():
    @ray.remote
    def fib(n):
        if n < 2:
            return n
        return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

    assert ray.get(fib.remote(12)) == 144  # ~465 tasks, far more than CPUs


def case_nested_submission_many():
    @ray.remote
    def fan_out(n):
        return sum(ray.get([identity.remote(i) for i in range(n)]))

    assert ray.get([fan_out.remote(20) for _ in range(6)]) == [190] * 6


def case_get_list_keeps_order_and_types():
    refs = [identity.remote(i) for i in range(50)]
    assert ray.get(refs) == list(range(50))
    assert ray.get(tuple(refs[:3])) == [0, 1, 2]
    raises(ValueError, ray.get, 1)
    raises(ValueError, ray.get, [refs[0], 1])


def case_get_timeout():
    @ray.remote
    def slow():
        time.sleep(2)
        return 1

    ref = slow.remote()
    started = time.monotonic()
    exc = raises(exceptions.GetTimeoutError, ray.get, ref, timeout=0.2)
    assert isinstance(exc, TimeoutError)
    assert 0.15 < time.monotonic() - started < 1.5
    raises(exceptions.GetTimeoutError, ray.get, ref, timeout=0)
    raises(ValueError, ray.get, ref, timeout=-1)
    assert ray.get(ref) == 1
    assert ray.get(ref, timeout=0) == 1


def case_get_raises_first_error_at_once():
    @ray.remote
    def slow():
        time.sleep(5)

    @ray.remote
    def fail():
        raise ValueError("fail fast")

    slow_ref = slow.remote()
    started = time.monotonic()
    raises(ValueError, ray.get, [slow_ref, fail.remote()], match="fail fast")
    assert time.monotonic() - started < 3.0


def case_objectref_api():
    ref = ray.put(5)
    assert isinstance(ref.hex(), str) and len(ref.hex()) == 40
    assert ref == pickle.loads(pickle.dumps(ref))
    assert hash(ref) == hash(pickle.loads(pickle.dumps(ref)))
    assert len({ref, ray.put(5), ref}) == 2
    assert ref.future().result(timeout=10) == 5
    assert identity.remote(6).future().result(timeout=10) == 6

    async def waiter():
        return await identity.remote(7)
    assert asyncio.run(waiter()) == 7

    @ray.remote
    def bad():
        raise KeyError("k")
    future = bad.remote().future()
    assert isinstance(future.exception(timeout=10), KeyError)


def case_ref_passed_through_many_hands():
    inner = ray.put("payload")

    @ray.remote
    def wrap(x):
        return [x]

    @ray.remote
    def unwrap(box):
        return ray.get(box[0])

    outer = wrap.remote([inner])
    del inner
    box = ray.get(outer)
    assert ray.get(unwrap.remote(box[0])) == "payload"


def case_runtime_env_env_vars_do_not_leak():
    @ray.remote
    def read(name):
        return os.environ.get(name), os.getenv(name), name in os.environ

    env = {"env_vars": {"HPCRAY_CASE_VAR": "set"}}
    assert ray.get(read.options(runtime_env=env).remote("HPCRAY_CASE_VAR")) == ("set", "set", True)
    plain = ray.get([read.remote("HPCRAY_CASE_VAR") for _ in range(8)])
    assert plain == [(None, None, False)] * 8
    assert "HPCRAY_CASE_VAR" not in os.environ

    @ray.remote(runtime_env={"env_vars": {"A_VAR": "a"}})
    def parent():
        return ray.get(read.remote("A_VAR"))
    assert ray.get(parent.remote())[0] is None  # env_vars belong to that task only


def case_unpicklable_argument_is_a_clear_error():
    import threading
    lock = threading.Lock()
    exc = raises(TypeError, identity.remote, lock)
    assert "lock" in str(exc).lower() and "an argument of identity()" in str(exc)
    raises(TypeError, ray.put, lock)

    @ray.remote
    def returns_lock():
        import threading as t
        return t.Lock()
    raises(exceptions.RayTaskError, ray.get, returns_lock.remote())


def case_system_exit_is_a_crashed_worker():
    @ray.remote(max_retries=0)
    def quit_now():
        raise SystemExit(3)
    raises(exceptions.WorkerCrashedError, ray.get, quit_now.remote())
    assert ray.get(identity.remote("still alive")) == "still alive"


def case_async_def_remote_function_is_value_error():
    async def coro():
        return 1
    raises(ValueError, ray.remote, coro)


def case_objects_freed_when_last_ref_dropped():
    import gc

    from hpcray._private.api import query

    from .helpers import wait_for_condition
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0, timeout=10)
    base = query("stats")["objects"]
    refs = [ray.put(np.zeros(1000)) for _ in range(40)] + [identity.remote(i) for i in range(40)]
    ray.get(refs)
    assert query("stats")["objects"] >= base + 80
    outer = ray.put([refs[0]])  # a ref nested in a stored value keeps its object alive
    kept = refs[0].hex()
    del refs
    gc.collect()
    wait_for_condition(lambda: query("stats")["objects"] == base + 2, timeout=10)
    inner = ray.get(outer)[0]
    assert inner.hex() == kept and ray.get(inner).shape == (1000,)
    del outer, inner
    gc.collect()
    wait_for_condition(lambda: query("stats")["objects"] == base, timeout=10)


def case_many_puts_and_gets_keep_object_table_flat():
    import gc

    from hpcray._private.api import query

    from .helpers import wait_for_condition
    gc.collect()
    base = query("stats")["objects"]
    for i in range(300):
        assert ray.get(identity.remote(ray.put(i))) == i
    gc.collect()
    wait_for_condition(lambda: query("stats")["objects"] <= base, timeout=10)


def case_ref_put_inside_task_and_returned_survives():
    @ray.remote
    def put_and_return():
        return [ray.put(np.full(200_000, 3.0)), ray.put("small")]  # one large, one inline

    for _ in range(5):
        big, small = ray.get(put_and_return.remote())
        assert ray.get(big).sum() == 600_000.0 and ray.get(small) == "small"


def case_driver_threads_submit_and_get_at_once():
    # several user threads share the loop: one runs its turns at a time, the others wait on it
    # (comm.CommLoop.lend); every thread gets its own results, none waits for long
    import concurrent.futures
    import threading

    errors = []

    def client(k: int) -> int:
        try:
            for i in range(100):
                assert ray.get(identity.remote((k, i))) == (k, i)
            batch = [identity.remote((k, i)) for i in range(200)]
            ready, _ = ray.wait(batch, num_returns=200, timeout=60)
            assert len(ready) == 200
            assert ray.get(batch) == [(k, i) for i in range(200)]
            future = identity.remote(k).future()
            assert future.result(timeout=60) == k
            return k
        except BaseException as exc:  # reported below, with the thread's number
            errors.append((k, exc))
            raise

    threads = 6
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        done = list(pool.map(client, range(threads), timeout=120))
    assert not errors, errors
    assert done == list(range(threads))
    assert threading.active_count() < 200


def case_long_tasks_after_a_burst_of_short_ones_run_on_every_rank():
    """Ranks that finish short tasks quickly are sent deeper queues; long tasks submitted in the
    same burst still run side by side, one per rank (a rank with room asks queued ones back)."""
    @ray.remote
    def noop():
        return None

    @ray.remote
    def slow():
        time.sleep(1.0)
        return ray.get_runtime_context().get_rank()

    workers = {rank for node in ray.nodes() for rank in node["Ranks"]}
    total = ray.cluster_resources()["CPU"]  # (tasks of earlier cases may still be ending)
    wait_for_condition(lambda: ray.available_resources().get("CPU") == total, timeout=30)
    for _ in range(3):
        assert ray.get([noop.remote() for _ in range(1000)]) == [None] * 1000
    refs = [noop.remote() for _ in range(2000)] + [slow.remote() for _ in workers]
    ranks = ray.get(refs[2000:])
    assert sorted(ranks) == sorted(workers), ranks
    assert ray.get(refs[:2000]) == [None] * 2000


def case_tasks_queued_behind_a_call_that_holds_the_gil_run_elsewhere():
    """A rank stuck in a C call that holds the GIL cannot answer the scheduler; the small tasks
    queued behind it are taken back without its help (claims.py) and run on the idle ranks."""
    import ctypes
    if not any(r != 0 for node in ray.nodes() for r in node.get("Ranks", [])):
        skip("one process: a call that holds the GIL stops every task thread alike")

    @ray.remote
    def hold_gil(seconds):
        ctypes.PyDLL(None).sleep(seconds)  # (PyDLL: the GIL stays held during the call)
        return ray.get_runtime_context().get_rank()

    @ray.remote
    def small():
        time.sleep(0.02)
        return ray.get_runtime_context().get_rank()

    ray.get([small.remote() for _ in range(20)])  # a known pace: the ranks hold tasks queued
    stuck = hold_gil.remote(6)
    refs = [small.remote() for _ in range(12)]
    started = time.monotonic()
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=30)
    waited = time.monotonic() - started
    assert len(ready) == len(refs)
    assert waited < 4.0, f"the small tasks waited {waited:.1f} s behind the call holding the GIL"
    assert ray.get(stuck, timeout=30) >= 1
