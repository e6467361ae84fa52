"""Streaming generator tasks, the scheduler's side (a mixin of Scheduler).

    producer rank                     rank 0 (scheduler)                      owner rank
    executor: next(generator) ──STREAM_ITEM(i)──► object i (1 hold: the owner's) ──STREAM_PUSH(i)──► client: stream's
                                                                                                   item i, counted
    task ends ────────────TASK_DONE──────────────► _finish: [error as item n] ─────STREAM_END(n)──► end of the stream
    waits (backpressure) ◄─STREAM_CONSUMED(k)─── forwarded ◄─────────────────────────STREAM_ACK(k)── next() took k

A streaming task's items are objects of their own (``item_id``: the task id with index 2, 3,
...; index 1 is the stream's completion ref, whose value is the item count). Each is counted
once for its owner (the submitter) as it is accepted, and pushed there at once, so the owner
never asks for them. Items are accepted strictly in order: a retried task makes its items again
from the first, and those already delivered are dropped here, so no item is delivered twice. An
error (the generator raised, the task was cancelled, its dependencies failed) becomes the item
after the last one delivered, which is what Ray's consumer sees raised at that item.
"""

from __future__ import annotations

from typing import Dict, Optional

from . import protocol as P
from .object_ref import object_id_of
from .serialization import SerializedValue

FIRST_ITEM_INDEX = 2  # object index of a stream's first item (1: the completion ref)


def item_id(task_id: bytes, index: int) -> bytes:
    """The object id of item ``index`` (from 0) of the stream of task ``task_id``."""
    return object_id_of(task_id, FIRST_ITEM_INDEX + index)


class Stream:
    __slots__ = ("owner", "delivered", "consumed")

    def __init__(self, owner: int):
        self.owner = owner  # the rank that submitted the task and reads the stream
        self.delivered = 0  # items accepted (and pushed to the owner)
        self.consumed = 0  # items the owner has taken (STREAM_ACK), for the producer's backpressure


class StreamDirectory:
    """Mixin for Scheduler: needs self.send, self.objects, self.tasks, self.actors,
    self.new_entry, self._set_value, self._unpin."""

    def _init_streams(self) -> None:
        self.streams: Dict[bytes, Stream] = {}

    def open_stream(self, src: int, task_id: bytes) -> None:
        self.streams[task_id] = Stream(src)

    def on_stream_item(self, src: int, task_id: bytes, index: int, value: SerializedValue) -> None:
        stream = self.streams.get(task_id)
        object_id = item_id(task_id, index)
        if stream is None or index != stream.delivered:
            # delivered already by an earlier attempt, or nobody reads the stream any more
            if value.location is not None:
                self.send(value.location, (P.FREE, object_id))
            for contained in value.contained:
                self._unpin(contained)  # the producer's PIN
            if stream is not None and stream.consumed:
                self.send(src, (P.STREAM_CONSUMED, task_id, stream.consumed))
            return
        stream.delivered += 1
        self.objects[object_id] = self.new_entry(1)  # the owner's hold
        self._set_value(object_id, value)
        for contained in value.contained:
            self._unpin(contained)  # the item's value holds them now
        self.send(stream.owner, (P.STREAM_PUSH, task_id, index, value))

    def on_stream_ack(self, src: int, task_id: bytes, consumed: int) -> None:
        stream = self.streams.get(task_id)
        record = self.tasks.get(task_id)
        if stream is None or record is None:
            return
        stream.consumed = max(stream.consumed, consumed)
        rank: Optional[int] = record.rank
        if record.spec.kind == P.ACTOR_METHOD:
            actor = self.actors.get(record.spec.actor_id)
            rank = actor.rank if actor is not None else None
        if rank is not None:
            self.send(rank, (P.STREAM_CONSUMED, task_id, stream.consumed))

    def close_stream(self, task_id: bytes, error: Optional[SerializedValue]) -> None:
        """The task ended for good: its error, if any, becomes the next item; the owner learns
        how many items there are."""
        stream = self.streams.pop(task_id, None)
        if stream is None:
            return
        total = stream.delivered
        if error is not None:
            completion = self.objects.get(object_id_of(task_id, 1))
            if completion is not None:
                completion.seen = True  # the error is reported once: as the stream's last item
            object_id = item_id(task_id, total)
            self.objects[object_id] = self.new_entry(1)
            self._set_value(object_id, error)
            self.send(stream.owner, (P.STREAM_PUSH, task_id, total, error))
            total += 1
        self.send(stream.owner, (P.STREAM_END, task_id, total))
