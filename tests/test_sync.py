"""SturdyCondition (sync.py): an exception that lands inside ``wait`` (a task's cancel is an
asynchronous KeyboardInterrupt in its thread) leaves the lock held once by the waiter, and is
raised. The lock below raises at the two worst moments, deterministically: right after ``wait``
released the lock (before sleeping), and right after it took the lock back."""

import threading

import pytest

from hpcray._private.sync import SturdyCondition


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
