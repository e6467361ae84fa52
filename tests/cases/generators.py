"""Generator tasks and methods (num_returns="streaming", the default for a generator, "dynamic",
and a static count): Ray's test_streaming_generator / test_generators checklist, both modes."""

import asyncio
import gc
import time
import warnings

import numpy as np

import hpcray as ray
from hpcray import exceptions
from hpcray._private.api import query

from .helpers import SignalActor, append_line, count_lines, raises, scratch_file, wait_for_condition

MB = 1 << 20


@ray.remote
def count_to(n):
    for i in range(n):
        yield i


@ray.remote
def total(*values):
    return float(sum(np.sum(v) for v in values))


def objects_held():
    return query("stats")["objects"]


def case_a_generator_function_streams_by_default():
    gen = count_to.remote(5)
    assert isinstance(gen, ray.ObjectRefGenerator)
    refs = list(gen)
    assert all(isinstance(ref, ray.ObjectRef) for ref in refs)
    assert ray.get(refs) == [0, 1, 2, 3, 4]
    explicit = count_to.options(num_returns="streaming").remote(3)
    assert [ray.get(ref) for ref in explicit] == [0, 1, 2]
    assert [ray.get(ref) for ref in count_to.remote(0)] == []


def case_the_first_item_arrives_while_the_task_runs():
    signal = SignalActor.remote()

    @ray.remote
    def two_parts(signal):
        yield "first"
        ray.get(signal.wait.remote())  # the task is still running when the first item is read
        yield "second"

    gen = two_parts.remote(signal)
    assert ray.get(next(gen), timeout=20) == "first"
    assert not gen.is_finished()
    ray.get(signal.send.remote())
    assert ray.get(next(gen), timeout=20) == "second"


def case_the_end_of_the_stream_and_its_completion():
    gen = count_to.remote(3)
    assert ray.get(list(gen)) == [0, 1, 2]
    for _ in range(2):  # the end is sticky
        raises(StopIteration, next, gen)
    assert gen.is_finished()
    assert ray.get(gen.completed(), timeout=20) == 3


def case_an_error_is_raised_at_its_item():
    class Broken(Exception):
        pass

    @ray.remote
    def fails_after_two():
        yield 1
        yield 2
        raise Broken("the third item")

    gen = fails_after_two.remote()
    assert ray.get(next(gen)) == 1
    assert ray.get(next(gen)) == 2
    bad = next(gen)
    raises(Broken, ray.get, bad, match="the third item")
    raises(exceptions.RayTaskError, ray.get, bad, match="the third item")
    raises(StopIteration, next, gen)


def case_async_iteration_in_asyncio_code():
    async def consume():
        values = []
        async for ref in count_to.remote(4):
            values.append(await ref)
        return values

    assert asyncio.run(consume()) == [0, 1, 2, 3]


def case_wait_accepts_generators():
    signal = SignalActor.remote()

    @ray.remote
    def gated(signal):
        ray.get(signal.wait.remote())
        yield "item"

    gen = gated.remote(signal)
    plain = count_to.remote(1).completed()
    ready, not_ready = ray.wait([gen, plain], num_returns=2, timeout=0.5)
    assert ready == [plain] and not_ready == [gen]
    ray.get(signal.send.remote())
    ready, _ = ray.wait([gen], timeout=20)
    assert ready == [gen]
    assert ray.get(next(gen)) == "item"
    ready, _ = ray.wait([gen], timeout=20)  # the end of the stream is ready too
    assert ready == [gen]
    raises(StopIteration, next, gen)


def case_items_are_freed_when_their_refs_go():
    before = objects_held()
    refs = list(count_to.remote(50))
    assert ray.get(refs) == list(range(50))
    assert objects_held() >= before + 50
    del refs
    gc.collect()
    wait_for_condition(lambda: objects_held() <= before, timeout=20)


def case_a_dropped_generator_releases_the_items_nobody_took():
    before = objects_held()
    gen = count_to.remote(20)
    first = next(gen)
    completed = gen.completed()
    assert ray.get(completed, timeout=20) == 20  # every item has arrived here
    del gen
    gc.collect()
    assert ray.get(first) == 0
    del first, completed
    gc.collect()
    wait_for_condition(lambda: objects_held() <= before, timeout=20)


def case_cancel_ends_the_stream():
    signal = SignalActor.remote()

    @ray.remote
    def endless(signal):
        yield "before"
        ray.get(signal.wait.remote())
        yield "never"

    gen = endless.remote(signal)
    assert ray.get(next(gen), timeout=20) == "before"
    ray.cancel(gen)
    raises(exceptions.TaskCancelledError, ray.get, next(gen), timeout=20)
    raises(StopIteration, next, gen)


def case_a_retried_generator_delivers_each_item_once():
    marker = scratch_file("generator-attempts")

    @ray.remote(max_retries=1, retry_exceptions=True)
    def flaky(marker):
        append_line(marker)
        first_attempt = count_lines(marker) == 1
        for i in range(5):
            if first_attempt and i == 3:
                raise RuntimeError("the first attempt fails after three items")
            yield i

    before = objects_held()
    refs = list(flaky.remote(marker))
    assert ray.get(refs) == [0, 1, 2, 3, 4]
    assert count_lines(marker) == 2
    del refs
    gc.collect()  # an item delivered twice would be counted twice, and never freed
    wait_for_condition(lambda: objects_held() <= before, timeout=20)


def case_actor_methods_can_be_generators():
    @ray.remote(max_concurrency=2, concurrency_groups={"io": 1})
    class Threaded:
        def numbers(self, n):
            for i in range(n):
                yield i

        @ray.method(concurrency_group="io")
        def grouped(self, n):
            yield from range(n)

        def plain(self):
            return [1, 2]

    @ray.remote
    class Async:
        async def numbers(self, n):
            for i in range(n):
                await asyncio.sleep(0)
                yield i * 2

    threaded, asynchronous = Threaded.remote(), Async.remote()
    assert ray.get(list(threaded.numbers.remote(3))) == [0, 1, 2]
    assert ray.get(list(threaded.grouped.remote(2))) == [0, 1]
    streamed = threaded.numbers.options(num_returns="streaming").remote(2)
    assert ray.get(list(streamed)) == [0, 1]
    assert ray.get(list(asynchronous.numbers.remote(3))) == [0, 2, 4]
    raises(ValueError, threaded.plain.options(num_returns="streaming").remote, match="generator")
    ray.kill(threaded)
    ray.kill(asynchronous)


def case_large_items_and_their_refs_travel():
    @ray.remote
    def arrays(n):
        for i in range(n):
            yield np.full(MB // 8, float(i))

    refs = list(arrays.remote(4))
    values = ray.get(refs)
    assert [float(v[0]) for v in values] == [0.0, 1.0, 2.0, 3.0]
    assert not values[1].flags.writeable  # a view, not a copy
    assert ray.get(total.remote(*refs)) == float(sum(i * (MB // 8) for i in range(4)))

    @ray.remote
    class Summer:
        def add(self, value):
            return float(np.sum(value))

    summer = Summer.remote()
    assert ray.get(summer.add.remote(refs[3])) == 3.0 * (MB // 8)
    ray.kill(summer)


def case_a_task_reads_a_stream_it_started():
    @ray.remote
    def reader(n):
        return sum(ray.get(ref) for ref in count_to.remote(n))

    assert ray.get(reader.remote(10), timeout=30) == 45


def counting_producer(backpressure: int, items: int):
    """A generator task with this backpressure that appends a line to its marker file before each
    of its ``items`` items: the file counts how far it ran."""
    @ray.remote(_generator_backpressure_num_objects=backpressure)
    def producer(marker):
        for i in range(items):
            append_line(marker)
            yield i
    return producer


def case_backpressure_bounds_unread_items():
    marker = scratch_file("produced")
    gen = counting_producer(2, 6).remote(marker)
    wait_for_condition(lambda: count_lines(marker) == 2, timeout=20)
    time.sleep(0.5)
    assert count_lines(marker) == 2, "the producer ran ahead of its backpressure limit"
    assert ray.get(next(gen)) == 0
    wait_for_condition(lambda: count_lines(marker) == 3, timeout=20)
    assert [ray.get(ref) for ref in gen] == [1, 2, 3, 4, 5]


def case_a_dropped_generator_releases_its_held_back_producer():
    marker = scratch_file("produced-unread")
    gen = counting_producer(1, 5).remote(marker)
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)  # held back after one item
    del gen
    gc.collect()
    wait_for_condition(lambda: count_lines(marker) == 5, timeout=20)  # runs to its end, unread


def case_dynamic_returns_a_ref_generator():
    from hpcray._private import options
    options._warned.discard("dynamic")  # (warned once per process: another case may have seen it)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = count_to.options(num_returns="dynamic").remote(3)
    assert any("dynamic' is deprecated" in str(w.message) for w in caught)
    assert isinstance(ref, ray.ObjectRef)
    items = ray.get(ref)
    assert isinstance(items, ray.DynamicObjectRefGenerator) and len(items) == 3
    assert [ray.get(item) for item in items] == [0, 1, 2]


def case_a_static_count_takes_that_many_items():
    first, second = count_to.options(num_returns=2).remote(2)
    assert ray.get([first, second]) == [0, 1]
    too_many = count_to.options(num_returns=2).remote(3)
    raises(ValueError, ray.get, too_many[0], match="num_returns=2 but returned 3")
    too_few = count_to.options(num_returns=2).remote(1)
    raises(ValueError, ray.get, too_few[1], match="num_returns=2 but returned 1")


def case_bad_input_is_an_error_at_the_call():
    @ray.remote
    def not_a_generator():
        return 1

    raises(ValueError, lambda: not_a_generator.options(num_returns="streaming").remote(), match="generator")
    raises(ValueError, lambda: not_a_generator.options(num_returns="dynamic").remote(), match="generator")
    raises(TypeError, total.remote, count_to.remote(1), match="ObjectRefGenerator cannot be pickled")
