"""Generator tasks, the consumer's side: Ray's ``ObjectRefGenerator`` (``num_returns="streaming"``,
the default for a generator function) and ``DynamicObjectRefGenerator`` (``"dynamic"``).

A stream's items are pushed to the rank that submitted the task as they are made (streams.py);
the client keeps them (``CoreClient.on_stream_push``) and, after the last, an end marker under
the id of the item that does not exist. So ``next()`` is a wait for one id: the item's (its ref
is returned) or the end marker's (StopIteration). Each item is counted once for this rank when it
arrives; ``next()`` hands that count to the ObjectRef it returns, and a generator dropped early
releases the items nobody took.
"""

from __future__ import annotations

import threading
from typing import Any, Iterator, List, Optional

from .interrupts import shielded
from .object_ref import ObjectRef
from .streams import item_id


class ObjectRefGenerator:
    """The refs of a streaming generator task's items, in order, as they are made.

    ``for ref in gen``, ``next(gen)``, ``async for ref in gen``; ``hpcray.wait([gen])`` is ready
    when the next item is there or the stream has ended; ``hpcray.cancel(gen)`` cancels the
    task. An error in the task is raised by ``get()`` of the item where it happened."""

    def __init__(self, client: Any, task_id: bytes, completion: ObjectRef, limit: int):
        self._client = client
        self._task_id = task_id
        self._completion = completion
        self._limit = limit  # backpressure: tell the producer how far we are (0: never)
        self._taken = 0  # items handed out by next()
        self._finished = False
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[ObjectRef]:
        return self

    def __next__(self) -> ObjectRef:
        ref = self._take(None)
        if ref is None:
            raise StopIteration
        return ref

    def __aiter__(self) -> "ObjectRefGenerator":
        return self

    async def __anext__(self) -> ObjectRef:
        import asyncio
        ref = await asyncio.get_running_loop().run_in_executor(None, self._take, None)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_sync(self, timeout_s: Optional[float] = None) -> ObjectRef:
        """Ray's: the next ref, waiting at most ``timeout_s`` (GetTimeoutError)."""
        ref = self._take(timeout_s)
        if ref is None:
            raise StopIteration
        return ref

    @shielded
    def _take(self, timeout_s: Optional[float]) -> Optional[ObjectRef]:
        with self._lock:  # one consumer at a time: items are taken in order
            if self._finished:
                return None
            object_id = item_id(self._task_id, self._taken)
            if not self._client.await_stream_item(object_id, timeout_s):
                self._finished = True
                return None
            self._taken += 1
            if self._limit > 0:
                self._client.stream_taken(self._task_id, self._taken)
            return ObjectRef.counted(object_id)  # the count the item arrived with

    def next_id(self) -> bytes:
        """The id ``wait()`` watches: the next item's, or the end marker's."""
        return item_id(self._task_id, self._taken)

    def completed(self) -> ObjectRef:
        """A ref whose value is the number of items once the task has ended (or its error)."""
        return self._completion

    def is_finished(self) -> bool:
        """Whether ``next()`` has reached the end of the stream."""
        return self._finished

    def task_id(self) -> bytes:
        return self._task_id

    def __del__(self) -> None:
        client = self._client
        if client is not None:
            client.drop_stream(self._task_id, self._taken)

    def __reduce__(self):
        raise TypeError("An ObjectRefGenerator cannot be pickled (passed to a task or stored); pass "
                        "the ObjectRefs it yields instead")

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id.hex()})"


class DynamicObjectRefGenerator:
    """The value of a ``num_returns="dynamic"`` task: the refs of its items, iterable."""

    def __init__(self, refs: List[ObjectRef]):
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"
