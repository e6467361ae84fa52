"""The node-shared object arena: ranks of one host share large values without copying them.

    start-up (every rank, once per job): host communicator = Split_type(COMM_TYPE_SHARED)
        [split further into pretend hosts with HPCRAY_RANKS_PER_HOST]; one segment per rank,
        every segment of a host mapped by every rank of that host: either one Win.Allocate
        window on the job's communicator (when Shared_query maps it; other hosts Rget from it) or
        Win.Allocate_shared on the host communicator (see create_arena)

    producer: put()/task return > inline_max ─► SegmentAllocator.allocate(total) ─► one copy of
        the pickle stream and each out-of-band buffer into its own segment (a large buffer by a
        few threads at once, parallel_copy.py) ─► Placement
        (rank, spans) travels in the object's stub; a Lease frees the block when the value goes
    consumer on the same host: Shared_query(rank) segment + spans ─► memoryviews, no copy;
        deserialize() wraps them read-only and *pinned*: each view holds an ObjectRef, so the
        object (and its block) stays alive while any array built on it lives
    consumer on another host: Rget from the world window, or point-to-point (object_plane.py)

A value that does not fit in the free part of the segment stays in private memory and moves by
point-to-point messages (never an error). With too little free space in /dev/shm the arena is
off, and the host's first rank says so once in the log.
"""

from __future__ import annotations

import array
import bisect
import ctypes
import itertools
import logging
import mmap
import os
import threading
from collections import deque
from typing import Any, Dict, List, Optional, Tuple

from .comm import wait_request
from .config import ARENA_CLOSE_S, MIN_SEGMENT, SHM_SHARE
from .parallel_copy import Copier

logger = logging.getLogger("hpcray")

ALIGN = 64

#: (producer rank, ((offset, nbytes), ...), tag): the pickle stream's span first, then each
#: buffer's; the block starts with ``tag`` while it holds this value (checked before mapping)
Placement = Tuple[int, Tuple[Tuple[int, int], ...], int]
TAG_BYTES = ALIGN


class SegmentAllocator:
    """First-fit allocation of blocks in one rank's segment, with coalescing free space.

    ``release`` may run in any thread, also inside the garbage collector while ``allocate`` holds
    the lock, so it only appends to a deque; the next ``allocate`` (or ``used_bytes``) merges.
    """

    def __init__(self, size: int):
        self.size = size
        self.free: List[Tuple[int, int]] = [(0, size)] if size else []  # (offset, size), sorted
        self.blocks: Dict[int, int] = {}
        self.released: deque = deque()
        self.lock = threading.Lock()
        self.closed = False  # the segment's memory is going away (end of the job): touch nothing

    def allocate(self, nbytes: int) -> Optional[int]:
        need = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self.lock:
            self._merge_released()
            for index, (offset, size) in enumerate(self.free):
                if size >= need:
                    if size == need:
                        del self.free[index]
                    else:
                        self.free[index] = (offset + need, size - need)
                    self.blocks[offset] = need
                    return offset
        return None

    def release(self, offset: int) -> None:
        self.released.append(offset)

    def used_bytes(self) -> int:
        with self.lock:
            self._merge_released()
            return sum(self.blocks.values())

    def _merge_released(self) -> None:
        free = self.free
        while self.released:
            offset = self.released.popleft()
            size = self.blocks.pop(offset)
            index = bisect.bisect_left(free, (offset, 0))
            if index < len(free) and offset + size == free[index][0]:  # joins the next free run
                size += free[index][1]
                del free[index]
            if index > 0 and free[index - 1][0] + free[index - 1][1] == offset:  # and the previous
                offset, size = free[index - 1][0], free[index - 1][1] + size
                del free[index - 1]
                index -= 1
            free.insert(index, (offset, size))


class Lease:
    """Owns one block of this rank's segment; the block is released when the lease is dropped.
    Its tag word is cleared first, so a reader that still has the placement sees it is gone."""

    __slots__ = ("allocator", "offset", "tag_word")

    def __init__(self, allocator: SegmentAllocator, offset: int, tag_word: memoryview):
        self.allocator = allocator
        self.offset = offset
        self.tag_word = tag_word

    def __del__(self):
        if not self.allocator.closed:
            self.tag_word[0] = 0
            self.allocator.release(self.offset)


def byte_view(memory: Any) -> memoryview:
    """Shared memory (an MPI window's, a mapped file) as a flat, writable view of bytes."""
    return memoryview(memory).cast("B")


_PINNED_BYTES: Any = None  # the class below, made once numpy is imported


def pinned_view(view: memoryview, pin: Any) -> memoryview:
    """A read-only memoryview of ``view`` whose lifetime holds ``pin`` (no copy).

    The view exports from a numpy array that holds ``pin``: whatever is built on the view (an
    array unpickled from it, a memoryview of that) references that array, so the pin lives as
    long as any of it does. (A memoryview cannot hold it: a view made from a memoryview refers to
    the memory's exporter, not to that memoryview.) The values read here hold out-of-band
    buffers, which means numpy arrays nearly always: their unpickling imports numpy anyway."""
    global _PINNED_BYTES
    import numpy as np
    if _PINNED_BYTES is None:
        _PINNED_BYTES = type("_PinnedBytes", (np.ndarray,), {
            "__doc__": "A read-only byte view of arena memory that keeps ``pin`` (an ObjectRef) alive."})
    array = np.frombuffer(view, dtype=np.uint8).view(_PINNED_BYTES)
    array.pin = pin
    array.flags.writeable = False
    return memoryview(array)


class SharedArena:
    """This rank's segment of the host's shared window, and views of its neighbours' segments."""

    def __init__(self, rank: int, window: Any, host_ranks: Dict[int, int], segment: memoryview,
                 world_window: Any = None):
        self.rank = rank
        self.window = window  # the window whose Shared_query maps the host's segments
        self.host_ranks = host_ranks  # world rank -> the rank to pass to window.Shared_query
        self.segment = segment
        self.allocator = SegmentAllocator(len(segment))
        self.world_window = world_window  # for Rget from other hosts, or None
        self.locked = world_window is not None  # create_arena opened the job-long Lock_all epoch
        self.peers: Dict[int, memoryview] = {rank: segment}
        self.full_count = 0
        self.tags = itertools.count((rank << 40) + 1)
        self.copier = Copier()  # one thread per copy, unless the runtime gives it more (start_arena)

    # ---- producer ----------------------------------------------------------------------
    def store(self, data: bytes, buffers: List[memoryview]) -> Optional[Tuple[List[memoryview], Placement, Lease]]:
        """Copy a pickle stream and its buffers into one block; None when the segment is full
        (or the job is ending: the value then stays in private memory)."""
        if not len(self.segment) or self.allocator.closed:
            return None
        sizes = [len(data)] + [b.nbytes for b in buffers]
        starts, total = [], TAG_BYTES
        for size in sizes:
            starts.append(total)
            total += -(-size // ALIGN) * ALIGN
        offset = self.allocator.allocate(total)
        if offset is None:
            self.full_count += 1
            if self.full_count == 1:
                logger.info("hpcray: rank %d's arena segment (%d bytes) has no room for %d bytes; such "
                            "values stay in private memory", self.rank, len(self.segment), total)
            return None
        segment = self.segment
        tag = next(self.tags)
        tag_word = segment[offset:offset + 8].cast("Q")
        lease = Lease(self.allocator, offset, tag_word)
        views = []
        for start, size, source in zip(starts, sizes, [data] + buffers):
            target = segment[offset + start:offset + start + size]
            self.copier.copy(target, source)
            views.append(target)
        tag_word[0] = tag  # last: the block holds the whole value before it is announced
        spans = tuple((offset + start, size) for start, size in zip(starts, sizes))
        return views[1:], (self.rank, spans, tag), lease

    # ---- consumer ----------------------------------------------------------------------
    def can_map(self, rank: int) -> bool:
        return rank in self.host_ranks

    def segment_of(self, rank: int) -> memoryview:
        """The whole segment of a rank on this host, mapped here (no copy)."""
        segment = self.peers.get(rank)
        if segment is None:
            buffer, _ = self.window.Shared_query(self.host_ranks[rank])
            segment = self.peers[rank] = byte_view(buffer)
        return segment

    def map(self, placement: Placement) -> Optional[Tuple[bytes, List[memoryview]]]:
        """The pickle stream (copied, it is small) and zero-copy views of the buffers; None when
        the block no longer holds this value (it was freed)."""
        rank, spans, tag = placement
        segment = self.segment_of(rank)
        (start, size), rest = spans[0], spans[1:]
        block = start - TAG_BYTES
        if segment[block:block + 8].cast("Q")[0] != tag:
            return None
        data = segment[start:start + size].tobytes()
        return data, [segment[o:o + n] for o, n in rest]

    def used_bytes(self) -> int:
        return self.allocator.used_bytes()

    def end_reads(self) -> None:
        """End the job-long passive-target epoch. Call it while the other ranks still make MPI
        progress (the driver: before it tells them to leave), or Unlock_all may wait forever."""
        if self.world_window is not None and self.locked:
            self.locked = False
            self.world_window.Unlock_all()

    def close(self, comm: Any, busy: bool, timeout_s: float = ARENA_CLOSE_S) -> None:
        """At the end of the job, on every rank (collective): free the world window, which owns
        the arena's memory, so UCX does not warn at exit about memory left registered.

        Task threads still running on some rank (the driver left while they ran) may be reading
        or writing that memory; then nobody frees it and MPI_Finalize is left to it, with UCX's
        warnings about it turned off (they name memory we left registered on purpose). The ranks
        agree by a polled Iallreduce of ``busy``; without an answer in ``timeout_s``, no Free.
        """
        self.allocator.closed = True  # leases dropped from now on (interpreter exit) write nothing
        self.copier.close()
        world_window = self.world_window
        if world_window is None:
            return
        from mpi4py import MPI
        self.end_reads()
        mine = array.array("i", [1 if busy else 0])
        anyone = array.array("i", [0])
        if wait_request(comm.Iallreduce(mine, anyone, op=MPI.MAX), timeout_s) and anyone[0] == 0:
            self.world_window = None
            world_window.Free()
        else:
            quiet_ucx_warnings()


def quiet_ucx_warnings() -> None:
    """Raise the log level of the UCX library this process has loaded (if any) to errors: UCX
    warns at MPI_Finalize about every region of a window left registered, which the job leaves
    on purpose while a task may still use it."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libucs.so" in line}
    except OSError:
        return
    for path in paths:
        try:
            ctypes.CDLL(path).ucs_global_opts_set_value(b"LOG_LEVEL", b"error")
        except (OSError, AttributeError):
            pass


def segment_bytes(requested: Optional[int], host_size: int, shm_dir: str = "/dev/shm") -> Tuple[int, str]:
    """Bytes of arena per rank, and why it is smaller than asked (empty when it is not)."""
    try:
        stat = os.statvfs(shm_dir)
        free = stat.f_bavail * stat.f_frsize
    except OSError as exc:
        return 0, f"{shm_dir} is not usable ({exc})"
    fits = int(free * SHM_SHARE / max(host_size, 1))
    wanted = requested if requested is not None else 2 << 30
    if wanted == 0:
        return 0, "HPCRAY_ARENA_BYTES=0"
    if fits < min(wanted, MIN_SEGMENT):
        return 0, (f"{shm_dir} has {free / 2**20:.0f} MiB free, too little for {host_size} ranks "
                   f"(at least {MIN_SEGMENT >> 20} MiB each)")
    if fits < wanted:
        return fits, ""
    return wanted, ""


def create_arena(comm: Any, ranks_per_host: int, requested: Optional[int],
                 remote_fetch: str, windows: bool = True) -> Optional[SharedArena]:
    """Collective over ``comm`` (every rank, once per job, once every rank has reached ``init()``:
    comm.job_communicator waited for that): make the host arenas, or None.

    With ``remote_fetch`` "auto" it first tries one ``Win.Allocate`` window on the job's communicator whose
    same-host segments ``Shared_query`` can map (MPI 4.1; MPICH here): the same memory gives
    zero-copy views on the host and ``Rget`` from other hosts, without the producer taking part.
    Where the MPI cannot map it, or with "p2p", the arena is ``Win.Allocate_shared`` on the host
    communicator and other hosts fetch by point-to-point messages. (A ``Win.Create`` window over
    that memory was measured too: software RMA here, 7 MB/s, so it is not offered.)
    Every decision is agreed by all ranks, as the windows are collective. Without ``windows``
    (a job that survives dead ranks) the host's segments are files (``FileSegments``): Open MPI
    does not promise that a shared-memory window outlives a member's death (its osc/sm component
    warns so), and one left to MPI_Finalize after a death hung there now and then.
    """
    from mpi4py import MPI
    rank = comm.Get_rank()
    host_comm = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    if ranks_per_host > 0:  # pretend hosts (tests): never share across them
        host_comm = host_comm.Split(rank // ranks_per_host, rank)
    host_ranks = host_comm.allgather(rank)
    size, why = segment_bytes(requested, host_comm.Get_size())
    sizes = host_comm.allgather(size)
    shared = min(sizes) > 0  # every rank of the host agrees: the windows are collective
    if not shared and host_comm.Get_rank() == 0 and why and why != "HPCRAY_ARENA_BYTES=0":
        logger.warning("hpcray: no node-shared object arena on this host: %s; large objects move "
                       "by point-to-point messages instead (slower, copies)", why)
    if comm.allreduce(shared and windows and remote_fetch == "auto", op=MPI.LAND):
        window = MPI.Win.Allocate(size, 1, comm=comm)
        mappable = all(_query_size(window, r) == n for r, n in zip(host_ranks, sizes))
        if comm.allreduce(mappable, op=MPI.LAND):
            window.Lock_all()  # one passive-target epoch for the job: every Rget happens inside it
            return SharedArena(rank, window, {r: r for r in host_ranks}, byte_view(window.tomemory()), window)
        window.Free()
        if rank == 0:
            logger.info("hpcray: this MPI cannot map a Win.Allocate window's same-host parts; using "
                        "Win.Allocate_shared per host and point-to-point messages across hosts")
    if not shared:
        return None
    if not windows:
        files = FileSegments(host_comm, host_ranks, size)
        return SharedArena(rank, files, {r: r for r in host_ranks}, files.segment(rank))
    try:
        window = MPI.Win.Allocate_shared(size, 1, comm=host_comm)
    except MPI.Exception as exc:
        # Processes the driver spawned (spawn.py) are not one shared-memory domain for MPICH,
        # though on one host. (Collective: every rank of the host gets the same error.)
        if host_comm.Get_rank() == 0:
            logger.info("hpcray: the ranks of this host cannot share an MPI window (%s); their arena "
                        "segments are files in /dev/shm instead", exc.Get_error_string().splitlines()[0])
        files = FileSegments(host_comm, host_ranks, size)
        return SharedArena(rank, files, {r: r for r in host_ranks}, files.segment(rank))
    buffer, _ = window.Shared_query(host_comm.Get_rank())
    local = {r: i for i, r in enumerate(host_ranks)}
    return SharedArena(rank, window, local, byte_view(buffer))


class FileSegments:
    """The host's segments as files of our own in /dev/shm, for ranks that cannot share an MPI
    window; ``Shared_query`` as a window's. Collective over ``host_comm``: each rank makes and
    maps its file, then maps everyone's; then each removes its name, so nothing is left in
    /dev/shm however the processes end (the mappings live until they do)."""

    def __init__(self, host_comm: Any, host_ranks: List[int], size: int):
        token = host_comm.bcast(f"{os.getpid()}-{next(_FILE_TOKENS)}" if host_comm.Get_rank() == 0 else None)
        path = f"/dev/shm/hpcray-{token}-{{}}"
        mine = host_ranks[host_comm.Get_rank()]
        descriptor = os.open(path.format(mine), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(descriptor, size)
            own = mmap.mmap(descriptor, size)
        finally:
            os.close(descriptor)
        host_comm.Barrier()  # every file exists
        self.maps: Dict[int, Any] = {mine: own}
        try:
            for rank in host_ranks:
                if rank != mine:
                    with open(path.format(rank), "r+b") as handle:
                        self.maps[rank] = mmap.mmap(handle.fileno(), size)
        finally:
            host_comm.Barrier()  # every file is mapped everywhere
            os.unlink(path.format(mine))

    def segment(self, rank: int) -> memoryview:
        return byte_view(self.maps[rank])

    def Shared_query(self, rank: int):  # noqa: N802 (an MPI window's name)
        return memoryview(self.maps[rank]), 1


_FILE_TOKENS = itertools.count()


def _query_size(window: Any, rank: int) -> int:
    try:
        buffer, _ = window.Shared_query(rank)
        return len(buffer) if buffer is not None else 0
    except Exception:  # this MPI cannot map that rank's part of a window from Win.Allocate
        return -1

