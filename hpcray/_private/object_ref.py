"""ObjectRef and the ids of tasks and objects.

An object id is 20 bytes: job (4) | rank that made it (4) | sequence number (8) | index (4).
A task id is the first 16 bytes of its return ids; index 0 is used by ``put``.
Ids are made locally on any rank without asking rank 0.

Every ObjectRef that comes to life or dies appends an event to its session's command queue (the
same FIFO as task submissions), so the comm thread counts the refs this process holds and tells
the scheduler in order: a ref passed into a task is pinned before its last local copy is dropped.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import struct
from typing import TYPE_CHECKING, Any, Tuple

if TYPE_CHECKING:  # (imported where a program awaits a ref: it is 30 ms of a worker's start)
    import asyncio

from . import serialization

INCREF = "incref"
DECREF = "decref"

_ID = struct.Struct(">IIQI")
_INDEX = struct.Struct(">I")  # the index part of an object id
_SEQ = struct.Struct(">Q")  # the sequence number part


def make_task_id(job: int, rank: int, seq: int) -> bytes:
    return _ID.pack(job, rank, seq, 0)[:16]


def object_id_of(task_id: bytes, index: int) -> bytes:
    return task_id + _INDEX.pack(index)


_FIRST = _INDEX.pack(1)


def return_ids_of(task_id: bytes, count: int) -> Tuple[bytes, ...]:
    """The ids of a task's ``count`` return values (indexes 1..count): a tuple, which the cyclic
    collector stops walking after one look (a list per pending task it walks again and again)."""
    if count == 1:
        return (task_id + _FIRST,)  # (most tasks)
    pack = _INDEX.pack
    return tuple([task_id + pack(i) for i in range(1, count + 1)])


def job_of(object_id: bytes) -> int:
    return struct.unpack_from(">I", object_id)[0]


class IdSource:
    """Makes unique task ids for one process in one session (thread-safe through itertools)."""

    def __init__(self, job: int, rank: int):
        self.job = job
        self.rank = rank
        self._seq = itertools.count(1)
        self._prefix = make_task_id(job, rank, 0)[:8]  # job | rank

    def next_task_id(self) -> bytes:
        return self._prefix + _SEQ.pack(next(self._seq))  # = make_task_id(job, rank, seq)


class _Session:
    """What a ref needs of the live session: the queue its life events go to."""

    sink = None  # a deque's append, or None outside a session
    client = None  # the CoreClient, for future() and await


current = _Session()


class ObjectRef:
    """A reference to a value that a task returned or ``put`` stored (Ray's ``ObjectRef``)."""

    __slots__ = ("_id", "_sink", "__weakref__")

    def __init__(self, binary: bytes):
        if not isinstance(binary, bytes) or len(binary) != _ID.size:
            raise ValueError(f"ObjectRef needs {_ID.size} id bytes, got {binary!r}")
        self._id = binary
        sink = current.sink
        self._sink = sink
        if sink is not None:
            sink((INCREF, binary))

    def __del__(self):
        sink = self._sink
        if sink is not None:
            sink((DECREF, self._id))

    @classmethod
    def counted(cls, binary: bytes) -> "ObjectRef":
        """A ref already counted where its life events are counted: the SUBMIT that creates a
        task's return ids counts one ref to each (comm.CommLoop), so no INCREF is sent."""
        ref = cls.__new__(cls)
        ref._id = binary
        ref._sink = current.sink
        return ref

    def binary(self) -> bytes:
        return self._id

    def hex(self) -> str:
        return self._id.hex()

    def task_id(self) -> bytes:
        return self._id[:16]

    def job_id(self) -> int:
        return job_of(self._id)

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __repr__(self) -> str:
        return f"ObjectRef({self._id.hex()})"

    def __reduce__(self):
        serialization.note_contained_ref(self._id)
        return (ObjectRef, (self._id,))

    def future(self) -> concurrent.futures.Future:
        """A ``concurrent.futures.Future`` that completes with the value (or its error)."""
        client = current.client
        if client is None:
            raise RuntimeError("hpcray is not initialized: call hpcray.init() first")
        return client.future_of(self)

    def __await__(self):
        import asyncio
        return asyncio.wrap_future(self.future()).__await__()

    def as_future(self) -> "asyncio.Future":
        import asyncio
        return asyncio.wrap_future(self.future())

