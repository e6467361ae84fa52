"""A condition variable that keeps its lock's state straight when an exception interrupts it.

``threading.Condition.wait`` re-takes its lock before it returns. If an exception lands while it
does (a signal handler raising KeyboardInterrupt on Ctrl-C in the main thread; an asynchronous
exception from a task's cancel in a pool thread), ``wait`` ends with the lock *not* held, and the
caller's ``with lock:`` then releases it again: ``RuntimeError: release unlocked lock`` in place
of the KeyboardInterrupt, and a lock another thread may hold released under it (seen in the
interrupts scenario). ``SturdyCondition`` finishes taking the lock first and raises afterwards.
"""

from __future__ import annotations

import threading
from typing import Optional


class SturdyCondition(threading.Condition):
    """``threading.Condition`` over a plain ``threading.Lock`` whose ``wait`` returns or raises
    with the lock held, even when interrupted while re-taking it."""

    def __init__(self, lock: Optional[threading.Lock] = None):
        super().__init__(lock if lock is not None else threading.Lock())
        self._interrupted = threading.local()

    def _acquire_restore(self, state) -> None:  # (Condition calls it to re-take the lock)
        while True:
            try:
                self._lock.acquire()
                return
            except BaseException as exc:  # keep taking the lock: raised once it is held (wait)
                self._interrupted.exc = exc

    def wait(self, timeout: Optional[float] = None) -> bool:
        try:
            return super().wait(timeout)
        finally:
            exc = getattr(self._interrupted, "exc", None)
            if exc is not None:
                self._interrupted.exc = None
                raise exc
