"""The refs one rank holds, counted locally, so rank 0 hears of an object only twice per rank.

Every ObjectRef birth (INCREF) and death (DECREF) on a rank is an event on its loop's command
queue, in order with its submissions. The loop keeps the count here; the scheduler's count of an
object has one unit per *rank* holding it: sent (HOLD +1) when the rank's count goes from 0 to 1
and (HOLD -1) when it returns to 0. A rank also holds, without a count, what it made itself (its
puts, the returns of its submissions until the refs die) and what rank 0 counted for it (ADOPT).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional


class RefTable:
    """Local counts of ObjectRefs and the set of objects rank 0 counts as held by this rank."""

    __slots__ = ("counts", "held", "job")

    def __init__(self) -> None:
        self.counts: Dict[bytes, int] = {}
        self.held: set = set()  # objects rank 0 counts one hold of this rank for
        self.job = 0  # the session's job: refs of an earlier one are ignored

    def clear(self) -> None:
        self.counts.clear()
        self.held.clear()

    def incref(self, object_id: bytes) -> bool:
        """One more local ref; True when rank 0 must now count this rank's hold (HOLD +1)."""
        counts = self.counts
        counts[object_id] = counts.get(object_id, 0) + 1
        if object_id in self.held:
            return False
        self.held.add(object_id)
        return True

    def decref(self, object_id: bytes) -> Optional[bool]:
        """One local ref less; True when it was the last (HOLD -1 and the local copy goes), None
        when the object was not counted here (a ref of an earlier session)."""
        counts = self.counts
        count = counts.get(object_id)
        if count is None:
            return None
        if count > 1:
            counts[object_id] = count - 1
            return False
        del counts[object_id]
        self.held.discard(object_id)
        return True

    def submitted(self, return_ids: Iterable[bytes]) -> None:
        """The returns of a task this rank submits: held, and counted once each for the refs
        ``submit`` makes (``ObjectRef.counted``)."""
        self.held.update(return_ids)
        counts = self.counts
        for object_id in return_ids:
            counts[object_id] = counts.get(object_id, 0) + 1

    def made(self, object_id: bytes) -> None:
        """An object this rank made (a put, a placement group's ready object): rank 0 counts the
        hold with the message that announces it."""
        self.held.add(object_id)

    def adopt(self, object_id: bytes) -> bool:
        """Rank 0 counted a hold for this rank already (a named actor's handle); False when we held
        the object anyway, so that extra count must be undone (HOLD -1)."""
        if object_id in self.held:
            return False
        self.held.add(object_id)
        return True
