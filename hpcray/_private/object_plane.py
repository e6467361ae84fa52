"""Large values stay on the rank that made them; consumers fetch them from that rank directly.

    producer rank                         rank 0 (scheduler)                 consumer rank
    TASK_DONE/PUT value > inline_max ──► keeps value, sends a *stub* ──► object table holds the stub
                                                (location = producer)      │ OBJECT(stub) / EXECUTE
    on_fetch ◄──────────────────────────────── FETCH(object_id) ◄──────────┘ (never via rank 0)
       └── OBJECT_DATA(object_id, value) ─────────────────────────────────► waiting callbacks
    FREE(object_id) from the scheduler when no reference is left ──► the producer drops it

Runs on each rank's comm thread. Values at or below ``inline_max`` bytes keep travelling inline
with the control messages; values put on rank 0 stay in rank 0's table.
"""

from __future__ import annotations

from typing import Callable, Dict, List

from .. import exceptions
from . import protocol as P
from .serialization import SerializedValue, serialize


class ObjectPlane:
    """The primary copies this rank holds, and the fetches it is waiting for."""

    def __init__(self, rank: int, send: Callable[[int, tuple], None], inline_max: int):
        self.rank = rank
        self.send = send
        self.inline_max = inline_max
        self.owned: Dict[bytes, SerializedValue] = {}
        self.fetching: Dict[bytes, List[Callable[[SerializedValue], None]]] = {}

    def keep_if_large(self, object_id: bytes, value: SerializedValue) -> SerializedValue:
        """Keep a large value here; return what goes to the scheduler (a stub, or the value)."""
        if self.rank == 0 or value.is_error or value.location is not None or value.nbytes <= self.inline_max:
            return value
        self.owned[object_id] = value
        return value.stub(self.rank)

    def resolve(self, object_id: bytes, value: SerializedValue, callback: Callable[[SerializedValue], None]) -> bool:
        """Call ``callback`` with the real value: at once if it is here (True), else after a fetch."""
        location = value.location
        if location is None:
            callback(value)
            return True
        if location == self.rank:
            callback(self.owned.get(object_id) or self._lost(object_id, "it was freed on this rank"))
            return True
        waiting = self.fetching.get(object_id)
        if waiting is None:
            self.fetching[object_id] = [callback]
            self.send(location, (P.FETCH, object_id))
        else:
            waiting.append(callback)
        return False

    # ---- messages --------------------------------------------------------------------------
    def on_fetch(self, src: int, object_id: bytes) -> None:
        value = self.owned.get(object_id)
        if value is None:
            value = self._lost(object_id, f"rank {self.rank} no longer holds it")
        self.send(src, (P.OBJECT_DATA, object_id, value))

    def on_object_data(self, object_id: bytes, value: SerializedValue) -> None:
        for callback in self.fetching.pop(object_id, ()):
            callback(value)

    def on_free(self, object_id: bytes) -> None:
        self.owned.pop(object_id, None)

    def reset(self) -> None:
        self.owned.clear()
        self.fetching.clear()

    @staticmethod
    def _lost(object_id: bytes, why: str) -> SerializedValue:
        return serialize(exceptions.ObjectLostError(
            object_id.hex(), message=f"Object {object_id.hex()} is lost: {why}"), is_error=True)


def resolve_all(plane: ObjectPlane, ids: List[bytes], values: List[SerializedValue],
                done: Callable[[List[SerializedValue]], None]) -> None:
    """Resolve every stub among ``values`` (fetching what lives elsewhere), then call ``done``."""
    if all(v.location is None for v in values):
        done(values)
        return
    resolved = list(values)
    missing = [i for i, v in enumerate(values) if v.location is not None]
    left = [len(missing)]

    def arrived(index: int) -> Callable[[SerializedValue], None]:
        def store(value: SerializedValue) -> None:
            resolved[index] = value
            left[0] -= 1
            if left[0] == 0:
                done(resolved)
        return store

    for index in missing:
        plane.resolve(ids[index], values[index], arrived(index))
