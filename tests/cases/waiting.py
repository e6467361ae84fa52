"""wait(): Ray's test_wait checklist, in both launch modes."""

import time

import hpcray as ray

from .helpers import raises


@ray.remote
def quick(i):
    return i


@ray.remote
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


def case_wait_some_and_all():
    refs = [quick.remote(i) for i in range(4)]
    ray.get(refs)
    ready, not_ready = ray.wait(refs)
    assert ready == refs[:1] and not_ready == refs[1:]
    ready, not_ready = ray.wait(refs, num_returns=4)
    assert ready == refs and not_ready == []


def case_wait_timeout_returns_in_time():
    ref = sleepy.remote(3)
    started = time.monotonic()
    ready, not_ready = ray.wait([ref], timeout=0.5)
    elapsed = time.monotonic() - started
    assert ready == [] and not_ready == [ref]
    assert 0.4 < elapsed < 2.0, elapsed
    started = time.monotonic()
    ready, _ = ray.wait([ref], timeout=0)
    assert ready == [] and time.monotonic() - started < 1.0


def case_wait_keeps_input_order():
    slow = sleepy.remote(1.0)
    fast = [quick.remote(i) for i in range(3)]
    refs = [fast[0], slow, fast[1], fast[2]]
    ready, not_ready = ray.wait(refs, num_returns=3, timeout=10)
    assert ready == [fast[0], fast[1], fast[2]] and not_ready == [slow]
    ready, not_ready = ray.wait(refs, num_returns=4, timeout=10)
    assert ready == refs


def case_wait_input_validation():
    ref = quick.remote(1)
    assert ray.wait([]) == ([], [])
    raises(ValueError, ray.wait, [ref, ref])
    raises(TypeError, ray.wait, ref)
    raises(TypeError, ray.wait, 1)
    raises(TypeError, ray.wait, [1])
    raises(ValueError, ray.wait, [ref], num_returns=2)
    raises(ValueError, ray.wait, [ref], num_returns=0)
    raises(ValueError, ray.wait, [ref], timeout=-1)


def case_wait_on_failed_task_counts_as_ready():
    @ray.remote
    def fail():
        raise ValueError("x")
    ref = fail.remote()
    ready, _ = ray.wait([ref], timeout=10)
    assert ready == [ref]


def case_wait_many():
    refs = [quick.remote(i) for i in range(300)]
    ready, not_ready = ray.wait(refs, num_returns=300, timeout=60)
    assert len(ready) == 300 and not not_ready


def case_wait_splits_ready_refs_in_input_order_for_every_count():
    refs = [quick.remote(i) for i in range(6)]
    ray.get(refs)
    for count in range(1, 7):
        ready, not_ready = ray.wait(refs, num_returns=count)
        assert ready == refs[:count] and not_ready == refs[count:], count
    pending = sleepy.remote(2)
    mixed = refs[:2] + [pending] + refs[2:]
    for fetch_local in (True, False):
        ready, not_ready = ray.wait(mixed, num_returns=5, timeout=0, fetch_local=fetch_local)
        assert ready == refs[:5] and not_ready == [pending, refs[5]], fetch_local
        ready, not_ready = ray.wait(mixed, num_returns=7, timeout=0.2, fetch_local=fetch_local)
        assert ready == refs and not_ready == [pending], fetch_local
    assert ray.get(pending) == 2
