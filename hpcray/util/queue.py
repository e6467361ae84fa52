"""``Queue``: a FIFO queue backed by an actor, passable to tasks (Ray's ``ray.util.queue``)."""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from typing import Any, Dict, List, Optional

from .._private import api


class Empty(_stdlib_queue.Empty):
    """Raised when getting from an empty queue without waiting, or after the timeout."""


class Full(_stdlib_queue.Full):
    """Raised when putting into a full queue without waiting, or after the timeout."""


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


class Queue:
    """A first-in first-out queue shared by the driver, tasks and actors."""

    def __init__(self, maxsize: int = 0, actor_options: Optional[Dict[str, Any]] = None):
        if not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, got {type(maxsize).__name__}")
        from .. import remote
        self.maxsize = maxsize
        options = dict(actor_options or {})
        self.actor = remote(_QueueActor).options(**options).remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        return api.get(self.actor.qsize.remote())

    def qsize(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return api.get(self.actor.empty.remote())

    def full(self) -> bool:
        return api.get(self.actor.full.remote())

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        """Add ``item``; waits for room unless ``block`` is False (then ``Full`` at once)."""
        _check_timeout(timeout)
        if not block:
            try:
                api.get(self.actor.put_nowait.remote(item))
            except asyncio.QueueFull:
                raise Full from None
            return
        try:
            api.get(self.actor.put.remote(item, timeout))
        except asyncio.TimeoutError:
            raise Full from None

    async def put_async(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        _check_timeout(timeout)
        try:
            if not block:
                await self.actor.put_nowait.remote(item)
            else:
                await self.actor.put.remote(item, timeout)
        except (asyncio.QueueFull, asyncio.TimeoutError):
            raise Full from None

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        """Remove and return the first item; waits for one unless ``block`` is False."""
        _check_timeout(timeout)
        if not block:
            try:
                return api.get(self.actor.get_nowait.remote())
            except asyncio.QueueEmpty:
                raise Empty from None
        try:
            return api.get(self.actor.get.remote(timeout))
        except asyncio.TimeoutError:
            raise Empty from None

    async def get_async(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        _check_timeout(timeout)
        try:
            if not block:
                return await self.actor.get_nowait.remote()
            return await self.actor.get.remote(timeout)
        except (asyncio.QueueEmpty, asyncio.TimeoutError):
            raise Empty from None

    def put_nowait(self, item: Any) -> None:
        return self.put(item, block=False)

    def put_nowait_batch(self, items: List[Any]) -> None:
        """Add all of ``items`` at once, or none (``Full``) if they do not fit."""
        if not isinstance(items, list):
            raise TypeError("put_nowait_batch() takes a list of items")
        try:
            api.get(self.actor.put_nowait_batch.remote(items))
        except asyncio.QueueFull as exc:
            raise Full(str(getattr(exc, "cause", exc))) from None

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> List[Any]:
        """Remove and return ``num_items`` items at once, or none (``Empty``)."""
        if not isinstance(num_items, int):
            raise TypeError("num_items must be an int")
        if num_items < 0:
            raise ValueError("num_items must be >= 0")
        try:
            return api.get(self.actor.get_nowait_batch.remote(num_items))
        except asyncio.QueueEmpty as exc:
            raise Empty(str(getattr(exc, "cause", exc))) from None

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """End the queue's actor."""
        if self.actor is not None:
            from ..actor import kill
            if force:
                kill(self.actor, no_restart=True)
            else:
                self.actor.__ray_terminate__.remote()
        self.actor = None


class _QueueActor:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    async def put(self, item: Any, timeout: Optional[float] = None) -> None:
        await asyncio.wait_for(self.queue.put(item), timeout)

    async def put_nowait(self, item: Any) -> None:
        self.queue.put_nowait(item)

    async def put_nowait_batch(self, items: List[Any]) -> None:
        if self.maxsize > 0 and len(items) + self.queue.qsize() > self.maxsize:
            raise asyncio.QueueFull(f"Cannot add {len(items)} items to queue of size "
                                    f"{self.queue.qsize()} and maxsize {self.maxsize}.")
        for item in items:
            self.queue.put_nowait(item)

    async def get(self, timeout: Optional[float] = None) -> Any:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def get_nowait(self) -> Any:
        return self.queue.get_nowait()

    async def get_nowait_batch(self, num_items: int) -> List[Any]:
        if num_items > self.queue.qsize():
            raise asyncio.QueueEmpty(f"Cannot get {num_items} items from queue of size {self.queue.qsize()}.")
        return [self.queue.get_nowait() for _ in range(num_items)]
