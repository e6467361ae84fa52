"""SturdyCondition: a wait interrupted while it re-takes its lock raises the interruption with
the lock held, instead of leaving the lock released under the caller's ``with``."""

import signal
import threading
import time

import pytest

from hpcray._private.sync import SturdyCondition


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("make", [SturdyCondition, lambda: SturdyCondition(threading.Lock())])
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
