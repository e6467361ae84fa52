"""Large values stay on the rank that made them; consumers read them from that rank directly.

    producer rank                         rank 0 (scheduler)                 consumer rank
    TASK_DONE/PUT value > inline_max ──► keeps value, sends a *stub* ──► object table holds the stub
      (in its arena segment if it fit:          (location = producer,      │ OBJECT(stub) / EXECUTE
       the stub carries the placement)           placement)                ▼
    same host, placement known ─────────────────────────────────────► map the producer's segment:
                                                                        zero-copy views (arena.py)
    other host, world window (auto), placement known ───────────────► Rget from the world window:
                                                                        the producer takes no part
    otherwise: on_fetch ◄───────────────────── FETCH(object_id) ◄──────┘ (never via rank 0)
       └── OBJECT_DATA_RAW(id, pickle, layout) + raw Isend of each big buffer ─► Irecv into pooled
           buffers, then the waiting callbacks (small buffers ride in the header)
    FREE(object_id) from the scheduler when no reference is left ──► the producer drops it (and
    its arena block, once no pinned view of it is left anywhere: those hold ObjectRefs)

Runs in each rank's loop turns. Values at or below ``inline_max`` bytes keep travelling inline
with the control messages. Without MPI (one rank) every value stays in rank 0's table.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import exceptions
from .config import RAW_MIN
from . import protocol as P
from .arena import TAG_BYTES
from .object_ref import return_ids_of
from .serialization import SerializedValue, serialize
from .timeline import RECORDER



class BufferPool:
    """Receive buffers that are reused once every value built on them is gone.

    Copying into warm pages is several times faster than into fresh ones (measured here:
    13.5 GB/s vs 6.5 GB/s for a raw 100 MB receive). A buffer is handed out as a view of a
    pooled base; when the view dies (the user dropped the value), the base returns to the pool.
    At most ``keep_bytes`` of idle bases are kept (``HPCRAY_POOL_BYTES``); the rest are freed.
    """

    def __init__(self, keep_bytes: int):
        self.keep_bytes = keep_bytes
        self.idle: Dict[int, List[Any]] = {}  # numpy byte arrays, by size
        self.idle_bytes = 0
        self.lock = threading.RLock()  # a view may die (and give back) while we hold it

    def take(self, size: int) -> Any:
        capacity = max(RAW_MIN, 1 << max(size - 1, 1).bit_length())
        base = None
        with self.lock:
            bases = self.idle.get(capacity)
            if bases:
                base = bases.pop()
                self.idle_bytes -= capacity
        if base is None:
            # numpy, imported here (values that arrive in raw buffers are nearly always arrays,
            # whose unpickling imports it anyway): the view handed out must hold the base, and
            # a memoryview of a memoryview does not hold that memoryview
            import numpy as np
            base = np.empty(capacity, dtype=np.uint8)
        view = base[:size]
        weakref.finalize(view, self._give_back, base)
        return view

    def _give_back(self, base: Any) -> None:
        with self.lock:
            if self.idle_bytes + base.nbytes <= self.keep_bytes:
                self.idle.setdefault(base.nbytes, []).append(base)
                self.idle_bytes += base.nbytes


class ObjectPlane:
    """The primary copies this rank holds, and the fetches it is waiting for."""

    def __init__(self, rank: int, send: Callable[[int, tuple], None], inline_max: int, transport=None,
                 pool_bytes: int = 1 << 30):
        self.rank = rank
        self.send = send
        self.transport = transport  # MPITransport for raw buffers; None on a single rank
        self.pool = BufferPool(pool_bytes)
        self.inline_max = inline_max
        self.owned: Dict[bytes, SerializedValue] = {}
        self.fetching: Dict[bytes, List[Callable[[SerializedValue], None]]] = {}
        self.fetch_began: Dict[bytes, Tuple[float, int]] = {}  # (when, from which rank)
        self.arena = None  # the rank's SharedArena (arena.py), or None
        self.dead: set = set()  # ranks that died (ULFM): what only they held is asked again
        # job rank -> how many times a new process replaced a dead one there (replacement.py)
        self.generations: Dict[int, int] = {}
        self.replacement = False  # this rank's process replaced a dead one
        # values whose holder died, asked of the scheduler again (REFETCH): id -> callbacks
        self.reasked: Dict[bytes, List[Callable[[SerializedValue], None]]] = {}

    def memory_report(self) -> dict:
        """Bytes of the values this rank keeps for others: in private memory, and in its arena
        segment (used and size); for the status table."""
        owned = list(self.owned.values())  # (read from another thread than the loop's, at times)
        arena = self.arena
        return {"private_bytes": sum(v.nbytes for v in owned if v.placement is None),
                "arena_used": arena.used_bytes() if arena is not None else 0,
                "arena_bytes": arena.allocator.size if arena is not None else 0}

    def keep_if_large(self, object_id: bytes, value: SerializedValue) -> SerializedValue:
        """Keep a large value here; return what goes to the scheduler (a stub, or the value)."""
        if value.is_error or value.location is not None or self.transport is None:
            return value
        if value.placement is None and (self.rank == 0 or value.nbytes <= self.inline_max):
            return value
        self.owned[object_id] = value
        return value.stub(self.rank)

    def keep_returns(self, task_id: bytes, values: List[SerializedValue]) -> List[SerializedValue]:
        """``keep_if_large`` for each return value of a task (return i is object i + 1)."""
        inline_max = self.inline_max
        if all(v.placement is None and not v.buffers and len(v.data) <= inline_max for v in values):
            return values  # small, inline values: the common case, no object ids needed
        ids = return_ids_of(task_id, len(values))
        return [self.keep_if_large(object_id, v) for object_id, v in zip(ids, values)]

    def resolve(self, object_id: bytes, value: SerializedValue, callback: Callable[[SerializedValue], None]) -> bool:
        """Call ``callback`` with the real value: at once if it is here (True), else after a fetch."""
        location = value.location
        if location is None:
            callback(value)
            return True
        if location == self.rank:
            callback(self.owned.get(object_id) or self._lost(object_id, "it was freed on this rank"))
            return True
        arena = self.arena
        placement = value.placement
        if placement is not None and arena is not None and arena.can_map(location):
            mapped = arena.map(placement)
            if mapped is None:
                callback(self._lost(object_id, f"rank {location} no longer holds it"))
            else:
                callback(SerializedValue(mapped[0], mapped[1], value.contained, False, None, placement))
            return True
        if location in self.dead:
            self._ask_again(object_id, location, [callback])
            return False
        waiting = self.fetching.get(object_id)
        if waiting is not None:
            waiting.append(callback)
            return False
        self.fetching[object_id] = [callback]
        self.fetch_began[object_id] = (time.time(), location)  # for the timeline
        if placement is not None and arena is not None and arena.world_window is not None:
            self._read_remote(object_id, value)
        else:
            self.send(location, (P.FETCH, object_id))
        return False

    def _read_remote(self, object_id: bytes, stub: SerializedValue) -> None:
        """One-sided: Rget the block's tag word, the pickle stream and the buffers from the
        producer's arena segment; the producer takes no part. A changed tag: it was freed."""
        rank, spans, tag = stub.placement
        tag_span = (spans[0][0] - TAG_BYTES, 8)

        def arrived(buffers: List[object]) -> None:
            if memoryview(buffers[0]).cast("Q")[0] != tag:
                self.on_object_data(object_id, self._lost(object_id, f"rank {rank} no longer holds it"))
                return
            data = bytes(buffers[1])
            self.on_object_data(object_id, SerializedValue(data, [memoryview(b) for b in buffers[2:]],
                                                           stub.contained))
        self.transport.read_remote(self.arena.world_window, rank, [tag_span] + list(spans), arrived,
                                   self.pool.take)

    # ---- messages --------------------------------------------------------------------------
    def on_fetch(self, src: int, object_id: bytes) -> None:
        value = self.owned.get(object_id)
        if value is None and self.replacement:
            # maybe a value of the process this one replaced: the scheduler knows what became of it
            self.send(src, (P.OBJECT_DATA, object_id, None))
            return
        if value is None:
            value = self._lost(object_id, f"rank {self.rank} no longer holds it")
        if self.transport is None or value.is_error:
            self.send(src, (P.OBJECT_DATA, object_id, value))
            return
        layout: List[object] = []
        raw = []
        for buffer in value.buffers:
            size = memoryview(buffer).nbytes
            if size >= RAW_MIN:
                layout.append(size)
                raw.append(buffer)
            else:
                layout.append(bytes(buffer))
        self.send(src, (P.OBJECT_DATA_RAW, object_id, value.data, value.contained, layout))
        self.transport.send_buffers(src, raw)

    def on_object_data_raw(self, src: int, object_id: bytes, data: bytes, contained: List[bytes],
                           layout: List[object]) -> None:
        sizes = [item for item in layout if isinstance(item, int)]

        def arrived(buffers: List[object]) -> None:
            received = iter(buffers)
            parts = [memoryview(next(received)) if isinstance(item, int) else item for item in layout]
            self.on_object_data(object_id, SerializedValue(data, parts, contained))
        self.transport.receive_buffers(src, sizes, arrived, self.pool.take)

    def on_object_data(self, object_id: bytes, value: Optional[SerializedValue]) -> None:
        began = self.fetch_began.pop(object_id, None)
        if value is None:  # the process at that rank replaced the one that held it (on_fetch)
            holder = began[1] if began is not None else -1
            self._ask_again(object_id, holder, self.fetching.pop(object_id, []),
                            self.generations.get(holder, 0) - 1)
            return
        if began is not None:
            size = len(value.data) + sum(memoryview(b).nbytes for b in value.buffers)
            RECORDER.complete("fetch object", "object_transfer", began[0],
                              {"object_id": object_id.hex(), "from_rank": began[1], "bytes": size})
        for callback in self.fetching.pop(object_id, ()):
            callback(value)

    def on_ranks_dead(self, ranks: List[int]) -> None:
        """Fetches from ranks that died are asked of the scheduler again (the transport dropped
        their transfers)."""
        self.dead.update(ranks)
        for object_id, (_, source) in list(self.fetch_began.items()):
            if source in self.dead:
                del self.fetch_began[object_id]
                self._ask_again(object_id, source, self.fetching.pop(object_id, []))

    def _ask_again(self, object_id: bytes, dead: int, callbacks: List[Callable[[SerializedValue], None]],
                   generation: Optional[int] = None) -> None:
        """The value's holder died: the scheduler knows whether its task makes it again (then
        it answers with the new value) or it is lost (ObjectLostError). ``generation``: which of
        the processes at that rank number held it (default: the one that died last)."""
        waiting = self.reasked.get(object_id)
        if waiting is not None:
            waiting.extend(callbacks)
            return
        self.reasked[object_id] = list(callbacks)  # (before the send: rank 0 answers within it)
        if generation is None:
            generation = self.generations.get(dead, 0)
        self.send(0, (P.REFETCH, object_id, dead, generation))

    def on_replaced(self, ranks: List[int]) -> None:
        """New processes took the numbers of these dead ranks: fetch from them again."""
        for rank in ranks:
            self.dead.discard(rank)
            self.generations[rank] = self.generations.get(rank, 0) + 1

    def answer_refetch(self, object_id: bytes, value: SerializedValue) -> bool:
        """The scheduler's answer (an OBJECT) to what ``_ask_again`` asked: resolve it for the
        callbacks that waited; False when nothing here asked for it again."""
        callbacks = self.reasked.pop(object_id, None)
        if callbacks is None:
            return False
        for callback in callbacks:
            self.resolve(object_id, value, callback)
        return True

    def on_free(self, object_id: bytes) -> None:
        self.owned.pop(object_id, None)

    def reset(self) -> None:
        self.owned.clear()
        self.fetching.clear()
        self.fetch_began.clear()
        self.reasked.clear()

    @staticmethod
    def _lost(object_id: bytes, why: str) -> SerializedValue:
        return serialize(exceptions.ObjectLostError(
            object_id.hex(), message=f"Object {object_id.hex()} is lost: {why}"), is_error=True)


def resolve_all(plane: ObjectPlane, ids: List[bytes], values: List[SerializedValue],
                done: Callable[[List[SerializedValue]], None]) -> None:
    """Resolve every stub among ``values`` (fetching what lives elsewhere), then call ``done``."""
    if not values or all(v.location is None for v in values):
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
