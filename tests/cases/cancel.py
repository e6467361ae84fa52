"""cancel(): Ray's test_cancel / test_actor_cancel checklist (force=False and force=True), both modes."""

import asyncio
import time

import hpcray as ray
from hpcray import exceptions

from .helpers import SignalActor, append_line, count_lines, raises, scratch_file, wait_for_condition


@ray.remote
def wait_for(signal, value=None):
    ray.get(signal.wait.remote())
    return value


@ray.remote
def combine(a, b):
    return (a, b)


CANCELLED = (exceptions.TaskCancelledError, exceptions.RayTaskError)


def case_cancel_running_task_blocked_in_get():
    for force in (False, True):
        signal = SignalActor.remote()
        marker = scratch_file("blocked")

        @ray.remote
        def blocked(signal):
            append_line(marker, "started")
            ray.get(signal.wait.remote())
            append_line(marker, "finished")

        ref = blocked.remote(signal)
        wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)  # running, in get()
        started = time.monotonic()
        ray.cancel(ref, force=force)
        raises(exceptions.TaskCancelledError, ray.get, ref, timeout=20)
        assert time.monotonic() - started < 10
        ray.get(signal.send.remote())
        assert count_lines(marker) == 1  # the cancelled task never went past its get()


def case_cancel_pending_task_never_runs_and_others_finish():
    signal = SignalActor.remote()
    blockers = [wait_for.remote(signal, i) for i in range(4)]
    queued = combine.remote(blockers[0], 1)  # waits for a dependency
    ray.cancel(queued)
    raises(exceptions.TaskCancelledError, ray.get, queued, timeout=20)
    ray.get(signal.send.remote())
    assert ray.get(blockers) == [0, 1, 2, 3]


def case_cancel_chain_head_fails_all_and_middle_fails_rest():
    for force in (False, True):
        signal = SignalActor.remote()
        head = wait_for.remote(signal, 1)
        second = combine.remote(head, 2)
        third = combine.remote(second, 3)
        fourth = combine.remote(third, 4)
        ray.cancel(third, force=force)
        for ref in (third, fourth):
            raises(CANCELLED, ray.get, ref, timeout=20)
        assert ray.wait([head, second], timeout=0.3)[0] == []
        ray.get(signal.send.remote())
        assert ray.get(second, timeout=20) == (1, 2)

        signal = SignalActor.remote()
        head = wait_for.remote(signal, 1)
        chain = [combine.remote(head, i) for i in range(3)]
        ray.cancel(head, force=force)
        for ref in [head] + chain:
            raises(CANCELLED, ray.get, ref, timeout=20)


def case_cancel_finished_task_is_a_no_op():
    ref = combine.remote(1, 2)
    assert ray.get(ref) == (1, 2)
    ray.cancel(ref)
    assert ray.get(ref) == (1, 2)
    raises(TypeError, ray.cancel, "not a ref")


def case_combine_with_cancelled_input_fails():
    signal = SignalActor.remote()
    a = wait_for.remote(signal, "a")
    b = combine.remote(1, 2)
    ray.get(b)
    result = combine.remote(a, b)
    ray.cancel(a)
    raises(CANCELLED, ray.get, result, timeout=20)


def case_recursive_cancel_reaches_children():
    signal = SignalActor.remote()
    marker = scratch_file("child-submitted")

    @ray.remote
    def parent():
        child = wait_for.remote(signal, "child")
        append_line(marker)
        return ray.get(child)

    ref = parent.remote()
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)  # the child exists
    ray.cancel(ref, recursive=True)
    raises(exceptions.TaskCancelledError, ray.get, ref, timeout=20)


def case_cancel_actor_calls():
    marker = scratch_file("actor-call-running")

    @ray.remote
    class Worker:
        def __init__(self, signal):
            self.signal = signal

        def block(self):
            append_line(marker, "block")
            ray.get(self.signal.wait.remote())
            return "finished"

        def quick(self):
            return "quick"

    @ray.remote
    class AsyncWorker:
        async def nap(self):
            append_line(marker, "nap")
            await asyncio.sleep(30)
            return "woke"

    signal = SignalActor.remote()
    worker = Worker.remote(signal)
    running = worker.block.remote()
    queued = worker.quick.remote()
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)  # block() runs: quick() waits
    ray.cancel(queued)
    raises(exceptions.TaskCancelledError, ray.get, queued, timeout=20)
    ray.cancel(running, recursive=False)  # a running sync call is not interrupted
    ray.get(signal.send.remote())
    assert ray.get(running, timeout=20) == "finished"
    assert ray.get(worker.quick.remote()) == "quick"

    sleeper = AsyncWorker.remote()
    nap = sleeper.nap.remote()
    wait_for_condition(lambda: count_lines(marker) == 2, timeout=20)  # nap() awaits
    ray.cancel(nap)
    started = time.monotonic()
    raises(exceptions.TaskCancelledError, ray.get, nap, timeout=20)
    assert time.monotonic() - started < 10


def case_many_cancels_nothing_hangs():
    signal = SignalActor.remote()
    refs = [wait_for.remote(signal, i) for i in range(100)]
    cancelled = set(range(0, 100, 5))
    for i in cancelled:
        ray.cancel(refs[i])
    # every cancelled task is still waiting for the signal (running, or queued): each must fail,
    # every other one must return its value
    ray.get(signal.send.remote())
    for i, ref in enumerate(refs):
        if i in cancelled:
            raises(exceptions.TaskCancelledError, ray.get, ref, timeout=30)
        else:
            assert ray.get(ref, timeout=30) == i


def case_the_error_of_a_cancel_says_whether_the_work_had_started():
    """Ray 2.60: a task or async actor call cancelled while it ran raises an error that is both a
    RayTaskError and a TaskCancelledError; one cancelled before it started, a TaskCancelledError."""
    marker = scratch_file("cancel-kind")

    @ray.remote
    def naps(path):
        append_line(path)
        for _ in range(3000):
            time.sleep(0.01)

    @ray.remote
    class Sleeper:
        async def nap(self, path):
            append_line(path)
            await asyncio.sleep(30)

    running = naps.remote(marker)
    wait_for_condition(lambda: count_lines(marker) == 1, timeout=20)
    ray.cancel(running)
    error = raises(exceptions.TaskCancelledError, ray.get, running, timeout=20)
    assert isinstance(error, exceptions.RayTaskError), type(error).__mro__
    signal = SignalActor.remote()
    never_started = combine.remote(wait_for.remote(signal), 1)  # waits for its argument
    ray.cancel(never_started)
    error = raises(exceptions.TaskCancelledError, ray.get, never_started, timeout=20)
    assert not isinstance(error, exceptions.RayTaskError), type(error).__mro__
    ray.get(signal.send.remote())
    sleeper = Sleeper.remote()
    call = sleeper.nap.remote(marker)
    wait_for_condition(lambda: count_lines(marker) == 2, timeout=20)
    ray.cancel(call)
    error = raises(exceptions.TaskCancelledError, ray.get, call, timeout=20)
    assert isinstance(error, exceptions.RayTaskError), type(error).__mro__
