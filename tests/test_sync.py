"""SturdyCondition (sync.py): an exception that lands inside ``wait`` (a signal handler's while it
re-takes its lock; a task's cancel, an asynchronous KeyboardInterrupt in its thread, right after
``wait`` released the lock or right after it took it back) leaves the lock held once by the
waiter, and is raised; and it still waits and notifies as a condition."""

import signal
import threading
import time

import pytest

from hpcray._private.sync import SturdyCondition


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("make", [SturdyCondition, lambda: SturdyCondition(threading.RLock())])
def test_interrupt_while_retaking_the_lock_raises_with_the_lock_held(make):
    cond = make()
    holder_error = []
    main = threading.main_thread().ident
    assert threading.get_ident() == main

    def handler(signum, frame):
        raise Interrupted()

    def holder():
        try:
            with cond:
                cond.notify()  # the waiter wakes and blocks re-taking the lock we hold
                time.sleep(0.3)
                signal.pthread_kill(main, signal.SIGUSR1)  # its lock acquire is interrupted
                time.sleep(0.3)
        except BaseException as exc:  # a release of a lock the waiter released under us
            holder_error.append(exc)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        thread = threading.Thread(target=holder)
        with pytest.raises(Interrupted):
            with cond:
                thread.start()
                cond.wait(10)
                pytest.fail("the wait returned without the interruption")
        thread.join(5)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not holder_error, holder_error
    assert cond.acquire(blocking=False), "the lock was left held"
    cond.release()


def test_waits_and_notifies_as_a_condition():
    cond = SturdyCondition()
    state = {"ready": False, "seen": None}

    def waiter():
        with cond:
            state["seen"] = cond.wait_for(lambda: state["ready"], timeout=10)

    with cond:
        assert cond.wait(0.01) is False  # a timeout returns False, the lock held again
    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    with cond:
        state["ready"] = True
        cond.notify_all()
    thread.join(10)
    assert state["seen"] is True


class Landed(Exception):
    pass


class LandingLock:
    """An RLock that raises ``Landed`` once, just after releasing it for a wait ("release") or
    just after taking it back ("restore")."""

    def __init__(self, moment: str):
        self.lock = threading.RLock()
        self.moment = moment

    def acquire(self, *args):
        return self.lock.acquire(*args)

    def release(self):
        self.lock.release()

    __enter__ = acquire

    def __exit__(self, *exc):
        self.release()

    def _is_owned(self):
        return self.lock._is_owned()

    def _release_save(self):
        state = self.lock._release_save()
        self._land("release")
        return state

    def _acquire_restore(self, state):
        self.lock._acquire_restore(state)
        self._land("restore")

    def _land(self, moment):
        if self.moment == moment:
            self.moment = None
            raise Landed


def wait_in_a_thread(cond):
    """Wait on ``cond`` in a thread; what it saw (the exception, whether it held the lock)."""
    seen = []

    def waiter():
        try:
            with cond:
                try:
                    cond.wait(0.05)
                except Landed:
                    seen.append("landed")
                seen.append(cond._is_owned())
        except BaseException as exc:  # (a RuntimeError of a lock released twice, say)
            seen.append(repr(exc))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the waiter deadlocked taking the lock a second time"
    return seen


@pytest.mark.parametrize("moment", ["release", "restore"])
def test_wait_raises_with_the_lock_held_once(moment):
    lock = LandingLock(moment)
    cond = SturdyCondition(lock)
    assert wait_in_a_thread(cond) == ["landed", True]
    assert lock.acquire(True, 1), "the lock was left taken"
    lock.release()
    assert wait_in_a_thread(cond) == [True]  # and the condition works on


def test_it_needs_a_lock_that_knows_its_owner():
    with pytest.raises(TypeError, match="RLock"):
        SturdyCondition(threading.Lock())
