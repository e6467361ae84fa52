"""A condition variable that keeps its lock's state straight when an exception interrupts it.

``threading.Condition.wait`` releases its lock, sleeps, and takes the lock back before it
returns. An asynchronous exception (a task's cancel raises KeyboardInterrupt in its pool thread;
on the driver's main thread Ctrl-C is held back instead, see interrupts.py) can land at any
bytecode boundary in between: after the lock is released but before the sleep, or just after
the lock was taken back but before ``wait`` knows it. ``Condition.wait`` then leaves with the lock
not held (the caller's ``with lock:`` releases it again: ``RuntimeError`` in place of the
interrupt, and a lock another thread may hold released under it), or takes it a second time and
deadlocks. ``SturdyCondition`` works over an ``RLock``, whose owner can be asked, and always
returns or raises with the lock held once, raising the interrupt afterwards.

A waiter must hold the lock once (not re-entered), as every caller here does.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class SturdyCondition(threading.Condition):
    """``threading.Condition`` over an ``RLock`` whose ``wait`` returns or raises with the lock
    held, even when an exception interrupts it."""

    def __init__(self, lock: Optional[Any] = None):
        super().__init__(lock if lock is not None else threading.RLock())
        if not hasattr(self._lock, "_is_owned"):
            raise TypeError("SturdyCondition needs a threading.RLock (it asks the lock who holds it)")
        lock = self._lock
        # (Condition copied the RLock's own _acquire_restore onto the instance: wrap that one)
        self._acquire_restore = lambda state: self._take(lambda: lock._acquire_restore(state))
        self._interrupted = threading.local()

    def _take(self, take: Callable[[], Any]) -> None:
        """Call ``take`` (which takes the lock) until the lock is ours; an exception that lands
        meanwhile is kept for ``wait`` to raise."""
        while True:
            try:
                take()
                return
            except BaseException as exc:
                self._interrupted.exc = exc
                if self._lock._is_owned():  # (it landed after the lock was taken)
                    return

    def wait(self, timeout: Optional[float] = None) -> bool:
        try:
            return super().wait(timeout)
        finally:
            if not self._lock._is_owned():  # (it landed after the lock was released)
                self._take(self._lock.acquire)
            exc = getattr(self._interrupted, "exc", None)
            if exc is not None:
                self._interrupted.exc = None
                raise exc
