"""Keep Python's cyclic collector from rescanning rank 0's large tables.

A job with hundreds of thousands of tasks or objects in flight holds a few objects the collector
tracks for each (its ``TaskSpec``, ``TaskRecord`` and ``ObjectEntry``, the caller's ``ObjectRef``).
Python runs a full collection each time its oldest generation has grown by a quarter, and each
one visits every tracked object, scattered over more memory the larger the job: rank 0's CPU
time per no-op task rose from 79 µs with 10,000 queued to 102 µs with 1,000,000, and stayed at
79 µs with the collector turned off.

``GcPolicy`` moves every tracked object into Python's permanent generation (``gc.freeze``, which
costs the same at any size) when the tables reach ``GC_FREEZE_AT`` entries and again each time
they have grown by as many, so a full collection visits at most the objects of that many
entries; it gives them back (``gc.unfreeze``) when the tables have shrunk to a quarter of their
size at the last freeze, and when the session ends. Frozen objects are still freed by reference
counting the moment their last reference goes; only garbage cycles among them wait for the
unfreeze. The policy stays out of the way of a program that froze objects itself or turned the
collector off.
"""

from __future__ import annotations

import gc

from .config import GC_FREEZE_AT


class GcPolicy:
    """When to freeze and unfreeze, from the size of rank 0's tables (``note``)."""

    __slots__ = ("step", "freeze_at", "frozen_size")

    def __init__(self, step: int = GC_FREEZE_AT):
        self.step = step
        self.freeze_at = step  # the next size that freezes
        self.frozen_size = 0  # the tables' size at our last freeze; 0: nothing frozen by us

    def note(self, size: int) -> None:
        if size >= self.freeze_at:
            self._freeze(size)
        elif self.frozen_size and size <= self.frozen_size // 4:
            self.release()

    def _freeze(self, size: int) -> None:
        self.freeze_at = size + self.step
        if not self.frozen_size and (gc.get_freeze_count() or not gc.isenabled()):
            return  # the program manages the collector itself
        gc.freeze()
        self.frozen_size = size

    def release(self) -> None:
        """Give back what we froze (the tables shrank, or the session ends)."""
        if self.frozen_size:
            gc.unfreeze()
        self.frozen_size = 0
        self.freeze_at = self.step
