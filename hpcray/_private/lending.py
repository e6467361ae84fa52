"""Who runs a rank's loop turns: the comm thread, or a guest it lends them to.

One thread at a time runs ``CommLoop.turn()`` (the ``turns`` lock), so MPI is called from one
thread at a time (``MPI_THREAD_SERIALIZED``). A thread that would otherwise sleep until the loop
brings it something (the driver in ``get``/``wait`` or right after ``remote()``, an idle executor
thread) runs the turns itself while it waits: it becomes the *guest*. The comm thread steps back
while a guest wants or holds the turns, and for a grace period after one leaves (it is likely
back soon: the driver between two calls).

States and transitions. Only the thread holding the gate (one would-be guest at a time) moves
the state, so every write happens under that lock; other threads only read it, and a stale read
costs at most one poll (the comm thread looks again within ``GUEST_WAIT_S``)::

    FREE ──enter()──► WANTED ──turns lock taken──► GUEST ──leave()──► FREE
                        └────── gave up waiting (deadline) ──────────► FREE

``FREE``: the comm thread may run the turns. ``WANTED``: a guest waits for the comm thread's
turn to end. ``GUEST``: a guest runs them; ``guest`` is its thread ident and ``hold`` its
``lend(hold=...)`` (its outgoing batches may wait for its next results).

One more piece of state belongs to lending: the burst counter (submissions since a submitter last
waited: the first of a burst goes out at once, the rest in batches), changed under a lock of its
own as any user thread may submit. (A Ctrl-C while the main thread is the guest waits until it
leaves: interrupts.py.)
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

FREE = 0
WANTED = 1
GUEST = 2


class Lending:
    """The turn lock, the guest's state and the burst counter of one loop."""

    __slots__ = ("turns", "_gate", "state", "guest", "hold", "left_at", "_burst", "_burst_lock")

    def __init__(self) -> None:
        self.turns = threading.Lock()  # held by whichever thread runs turn()
        self._gate = threading.Lock()  # one guest (or would-be guest) at a time
        self.state = FREE
        self.guest: Optional[int] = None  # the guest's thread ident, in state GUEST
        self.hold: Optional[Callable[[], bool]] = None  # the guest's lend(hold=...), in state GUEST
        self.left_at = 0.0  # when a guest last left the turns (time.monotonic()); 0.0: gave up
        self._burst = 0
        self._burst_lock = threading.Lock()

    # ---- the guest's side -------------------------------------------------------------------
    def enter(self, me: int, wait_s: float, hold: Optional[Callable[[], bool]]) -> Optional[bool]:
        """Become the guest: True once the turns are ours; None when another thread is or wants
        to be the guest; False when the comm thread's turn did not end within ``wait_s``
        (-1: no limit). After True, ``leave()`` must follow."""
        if not self._gate.acquire(False):
            return None
        self.state = WANTED
        if not self.turns.acquire(True, wait_s):
            self.state = FREE
            self._gate.release()
            return False
        self.guest = me
        self.hold = hold
        self.state = GUEST
        return True

    def leave(self, gone: bool) -> None:
        """Give the turns back. ``gone``: the guest stopped for lack of progress or time and is
        not back soon, so the comm thread gets no grace period."""
        self.hold = None
        self.guest = None
        self.left_at = 0.0 if gone else time.monotonic()
        self.state = FREE
        self.turns.release()
        self._gate.release()

    # ---- the comm thread's side -------------------------------------------------------------
    def comm_steps_back(self, asked: bool, idle_s: float, grace_s: float, last_activity: float,
                        now: float) -> bool:
        """Whether the comm thread leaves the turns alone now: a guest wants or holds them, or
        one left less than ``grace_s`` ago while nothing asked for the comm thread (``asked``)
        and it has been idle ``idle_s``."""
        if self.state != FREE:
            return True
        return not asked and now - last_activity >= idle_s and now - self.left_at < grace_s

    # ---- bursts of submissions ----------------------------------------------------------------
    def count_submission(self) -> bool:
        """Count one submission; True for the first since the submitter last waited."""
        with self._burst_lock:
            self._burst += 1
            return self._burst == 1

    def end_burst(self) -> None:
        """A submitter waits for something: the next submission starts a new burst."""
        if self._burst:
            with self._burst_lock:
                self._burst = 0
