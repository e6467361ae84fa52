"""The loop of a rank: the only caller of MPI, one thread at a time, and the home of the scheduler
on rank 0. Its turns run on the rank's comm thread, or on a waiting thread it lends them to.

    user / executor threads ──append──► commands (deque) ──► CommLoop.turn()
                                                                │  ref events → held counts
           MPI (Isend / Improbe, one frame per destination)   ◄┤  upstream → scheduler (rank 0)
                                                                │              or rank 0 (others)
                            incoming batches ──────────────────►┘  downstream → agent (store,
                                                                               executor)
Waiting: after any progress the loop keeps polling for ``spin_us``; then it sleeps on an event
with a timeout that doubles up to ``max_sleep_us``. A command from a local thread sets the event,
so local work never waits for the backoff. It never blocks inside MPI.

Lent turns (lending.py): one thread at a time runs ``turn()``, the comm thread or a thread that
would otherwise sleep until the loop brings it something, which runs the turns itself meanwhile
(``lend()``). This takes the thread hand-offs (a wake-up plus a GIL switch each, 20-40 µs here)
out of a task's round trip.

    user thread:  remote() ─► commands ─► lend(): turn() ─► Isend ...... Improbe ─► deliver ─► get returns
    worker:       idle executor thread: lend(): Improbe ─► EXECUTE ─► runs it ─► TASK_DONE ─► turn() ─► Isend

Reference counting is the RefTable's (ref_table.py); the loop only turns its answers into HOLD
messages. Messages within rank 0 (its own submissions and holds to its scheduler, the
scheduler's values and calls for rank 0) take one path: ``send`` to our own rank handles them
at once, in the turn.
"""

from __future__ import annotations

import logging
import mmap
import os
import pickle
import threading
import time
from collections import deque
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import protocol as P
from .config import (BATCH_MAX, BATCH_S, FINAL_FLUSH_S, GUEST_WAIT_S, HOLD_S, OOB_MIN, RAW_MIN,
                     SINGLE_RANK_IDLE_S, SMALL_FRAME, START_POLL_MAX_S)
from .interrupts import SHIELD
from .lending import FREE, GUEST, Lending
from .object_ref import DECREF, INCREF, job_of
from .ref_table import RefTable
from .streams import item_id
from .serialization import contiguous

logger = logging.getLogger("hpcray")

TAG = 7  # control batches: one pickled frame each (see MPITransport)
TAG_DATA = 8  # raw buffers of large values (object_plane.py), in posting order per pair of ranks
TAG_BIG = 9  # the pickle stream and out-of-band buffers of a large control batch, in order
CHUNK = 1 << 30  # MPI counts are 32-bit: buffers move in pieces of at most 1 GiB
FRAME_SMALL = b"s"
FRAME_LARGE = b"L"
_ARRIVING = object()  # the place of a large batch whose parts are still on their way


class Backoff:
    """Sleeps between polls that grow from ``first_s`` to ``max_s`` (never a blocking MPI wait,
    never a spin): ``backoff.sleep()`` after each poll that found nothing."""

    __slots__ = ("first_s", "max_s", "delay_s")

    def __init__(self, first_s: float = 1e-4, max_s: float = 0.01):
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s

    def sleep(self) -> None:
        time.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.max_s)


def wait_request(request: Any, timeout_s: float, backoff: Optional[Backoff] = None) -> bool:
    """Poll a non-blocking MPI request until it completes (True) or ``timeout_s`` passes (False),
    sleeping between polls as ``backoff`` says (default: a ``Backoff()``)."""
    deadline = time.monotonic() + timeout_s
    backoff = backoff or Backoff()
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        backoff.sleep()
    return True


def job_communicator(timeout_s: float) -> Optional[Any]:
    """hpcray's own communicator, or None when the world has one process.

    A duplicate of the world's: nothing a task does with MPI (a send on any tag, a wildcard
    receive, a collective on ``COMM_WORLD``) can meet hpcray's messages or windows. Every rank
    makes it in ``init()``; a rank that never gets there is an error after ``timeout_s``, not a
    hang. The rest of the runtime is given this communicator and never names the world's."""
    from mpi4py import MPI
    world = MPI.COMM_WORLD
    if world.Get_size() == 1:
        return None
    comm = duplicate(world, timeout_s)
    if fault_tolerant():  # MPI errors come back as exceptions instead of ending the job
        comm.Set_errhandler(MPI.ERRORS_RETURN)
    return comm


def fault_tolerant() -> bool:
    """Whether this job survives the death of a rank: Open MPI's ULFM, turned on by
    ``mpiexec --with-ft ulfm`` (which sets ``OMPI_MCA_mpi_ft_enable``), with an mpi4py that has
    its calls (``Comm.Get_failed``, ``Ack_failed``, ``Revoke``)."""
    if os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() not in ("1", "true", "yes", "enabled"):
        return False
    from mpi4py import MPI
    return hasattr(MPI.Comm, "Get_failed") and hasattr(MPI.Comm, "Ack_failed")


def fresh_buffer(size: int) -> Any:
    """A writable buffer of ``size`` bytes for a receive to fill: a large one is an anonymous
    mapping, whose pages the kernel zeroes as they are first written (a ``bytearray`` would be
    zeroed by a pass of its own first)."""
    return mmap.mmap(-1, size) if size >= RAW_MIN else bytearray(size)


def duplicate(base: Any, timeout_s: float) -> Any:
    """A duplicate of ``base`` made by every rank of it (``Idup``, polled)."""
    comm, request = base.Idup()
    if not wait_request(request, timeout_s, Backoff(max_s=START_POLL_MAX_S)):
        raise RuntimeError(f"hpcray.init(): not every rank called hpcray.init() within {timeout_s:.0f} s; "
                           "every rank must reach init() (call it near the top of the program)")
    return comm


class MPITransport:
    """Batched, non-blocking messages between ranks.

    A batch is pickled (protocol 5) once. Up to ``SMALL_FRAME`` bytes with no large buffers it
    travels as one raw message on ``TAG``: ``"s" + pickle`` (measured here: 5 µs one way, against
    33-48 µs through mpi4py's pkl5, which sends each object as two messages). A larger batch sends
    ``"L" + pickle((stream size, buffer sizes))`` on ``TAG``, then the stream and each buffer as
    raw messages on ``TAG_BIG``, in pieces of at most 1 GiB (objects over 2 GiB work). The
    receiver posts Irecvs for those and holds any later batch from the same source until the
    large one is complete, so batches from one rank are handled in the order they were sent.

    After dead ranks were replaced (``grow``, ULFM only) the job has several communicators:
    generation 0, the one it started with, and one more per replacement, each holding every
    rank alive then. Ranks keep their job numbers; two ranks talk on the communicator where the
    later of the two joined (both sides pick the same one, so each pair's messages stay in order),
    through that communicator's numbering.
    """

    def __init__(self, comm: Any, generation: int = 0, numbers: Optional[List[int]] = None):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm  # the communicator this process joined the job with
        self.generation = generation  # and its generation (a replacement's is above 0)
        self.comms: Dict[int, Any] = {generation: comm}
        # job rank -> the generation its process joined in (absent: 0); per generation, the job
        # rank of each of its ranks (absent: the same numbers)
        self.joined: Dict[int, int] = {}
        self.numbers: Dict[int, List[int]] = {}
        self.positions: Dict[int, Dict[int, int]] = {}  # the other way: job rank -> its rank there
        if numbers is not None:
            self._number(generation, numbers)
        self.routed = generation != 0  # (else every rank talks on ``comm``: the common case)
        self.rank = numbers[comm.Get_rank()] if numbers is not None else comm.Get_rank()
        self.size = comm.Get_size()
        self.sending: List[tuple] = []  # (request, buffer kept alive until sent)
        self.sending_raw: List[tuple] = []  # (request, buffer kept alive until sent)
        self.receiving: List[tuple] = []  # (requests, buffers, callback)
        self.held: Dict[int, deque] = {}  # source -> [batch] slots, while a large one arrives
        self.ready: List[tuple] = []  # (source, batch) completed large batches, in order
        self._status = MPI.Status()
        # whether threads other than the one that initialized MPI may call it (one at a time)
        self.serialized = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
        # ranks known dead (ULFM only: elsewhere a dead rank ends the job), and who hears of them
        self.dead: set = set()
        self.deaths = 0  # processes that died in this job (a replaced rank is no longer in ``dead``)
        self.revoked = False  # the job's end after a death revoked the communicator
        self.on_dead: Callable[[List[int]], None] = lambda ranks: None

    def send(self, dest: int, batch: List[tuple]) -> None:
        MPI = self.MPI
        buffers: List[pickle.PickleBuffer] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            if memoryview(buffer).nbytes < OOB_MIN:
                return True  # small: stays in the stream
            buffers.append(buffer)
            return False

        if dest in self.dead or self.revoked:
            return
        stream = pickle.dumps(batch, protocol=5, buffer_callback=out_of_band)
        comm, peer = self.route(dest) if self.routed else (self.comm, dest)
        try:
            if not buffers and len(stream) < SMALL_FRAME:
                frame = FRAME_SMALL + stream
                self.sending.append((comm.Isend([frame, MPI.BYTE], peer, TAG), frame, dest))
                return
            views = [memoryview(stream)] + [contiguous(b) for b in buffers]
            header = FRAME_LARGE + pickle.dumps([v.nbytes for v in views], protocol=5)
            self.sending.append((comm.Isend([header, MPI.BYTE], peer, TAG), header, dest))
            self.send_buffers(dest, views, TAG_BIG)
        except MPI.Exception as exc:
            self.failed(exc)

    def receive(self, limit: int = 64) -> List[tuple]:
        """Up to ``limit`` batches that arrived, as (source, batch); never blocks in MPI."""
        got = self.ready
        self.ready = []
        if not self.routed:
            self._receive_on(self.comm, None, limit, got)
        else:
            for generation, comm in list(self.comms.items()):
                self._receive_on(comm, self.numbers.get(generation), limit, got)
        return got

    def _receive_on(self, comm: Any, numbers: Optional[List[int]], limit: int, got: List[tuple]) -> None:
        MPI = self.MPI
        status = self._status
        for _ in range(limit if not self.revoked else 0):
            try:
                message = comm.Improbe(MPI.ANY_SOURCE, TAG, status)
            except MPI.Exception as exc:  # (a wildcard probe is how a rank's death shows first)
                self.failed(exc)
                break
            if message is None:
                break
            source = status.Get_source() if numbers is None else numbers[status.Get_source()]
            frame = bytearray(status.Get_count(MPI.BYTE))
            message.Recv([frame, MPI.BYTE])  # a probed small message: already here
            if frame[:1] == FRAME_SMALL:
                batch = pickle.loads(memoryview(frame)[1:])
                queue = self.held.get(source)
                if queue is None:
                    got.append((source, batch))
                else:
                    queue.append([batch])  # behind a large batch still arriving
            else:
                self._receive_large(source, pickle.loads(memoryview(frame)[1:]))

    def route(self, rank: int) -> Tuple[Any, int]:
        """(communicator, its number for ``rank``) on which this process talks to job rank ``rank``."""
        generation = max(self.joined.get(rank, 0), self.generation)
        positions = self.positions.get(generation)
        return self.comms[generation], (rank if positions is None else positions[rank])

    def _number(self, generation: int, numbers: List[int]) -> None:
        self.numbers[generation] = numbers
        self.positions[generation] = {job_rank: i for i, job_rank in enumerate(numbers)}

    def _receive_large(self, source: int, sizes: List[int]) -> None:
        queue = self.held.get(source)
        if queue is None:
            queue = self.held[source] = deque()
        slot = [_ARRIVING]
        queue.append(slot)  # the batch takes its place in the source's order once complete

        def complete(parts: List[Any]) -> None:
            slot[0] = pickle.loads(parts[0], buffers=parts[1:])
            self._release(source)
        self.receive_buffers(source, sizes, complete, fresh_buffer, TAG_BIG)

    def _release(self, source: int) -> None:
        """Hand on the batches of ``source`` that are complete, up to the first that is not."""
        queue = self.held[source]
        while queue and queue[0][0] is not _ARRIVING:
            self.ready.append((source, queue.popleft()[0]))
        if not queue:
            del self.held[source]

    def send_buffers(self, dest: int, buffers: List[Any], tag: int = TAG_DATA) -> None:
        """Isend raw buffers (no pickling, no copy), in order, on ``tag``, in pieces of at most
        ``CHUNK`` bytes."""
        MPI = self.MPI
        comm, peer = self.route(dest) if self.routed else (self.comm, dest)
        for buffer in buffers:
            view = memoryview(buffer).cast("B")
            for start in range(0, max(len(view), 1), CHUNK):
                piece = view[start:start + CHUNK]
                self.sending_raw.append((comm.Isend([piece, MPI.BYTE], peer, tag), piece, dest))

    def receive_buffers(self, source: int, sizes: List[int], callback: Any, allocate: Any,
                        tag: int = TAG_DATA) -> None:
        """Irecv raw buffers of these sizes from ``source`` on ``tag`` (the pieces
        ``send_buffers`` made) into ``allocate(size)`` buffers; ``callback(buffers)`` when all
        are in."""
        MPI = self.MPI
        comm, peer = self.route(source) if self.routed else (self.comm, source)
        buffers = [allocate(size) for size in sizes]
        requests = []
        for buffer in buffers:
            view = memoryview(buffer)
            for start in range(0, max(len(view), 1), CHUNK):
                requests.append(comm.Irecv([view[start:start + CHUNK], MPI.BYTE], peer, tag))
        self.receiving.append((requests, buffers, callback, source))

    def read_remote(self, window: Any, target: int, spans: List[tuple], callback: Any, allocate: Any) -> None:
        """Rget spans (offset, nbytes) of ``target``'s window memory into ``allocate(size)``
        buffers, inside the job-long passive-target epoch; ``callback(buffers)`` when all are in."""
        MPI = self.MPI
        buffers = [allocate(size) for _, size in spans]
        requests = []
        for (offset, size), buffer in zip(spans, buffers):
            view = memoryview(buffer)
            for start in range(0, size, CHUNK):
                piece = view[start:start + CHUNK]
                requests.append(window.Rget([piece, MPI.BYTE], target, [offset + start, len(piece), MPI.BYTE]))
        self.receiving.append((requests, buffers, callback, target))

    def progress_receives(self) -> bool:
        if not self.receiving:
            return False
        finished, waiting = [], []
        try:
            for entry in self.receiving:
                (finished if self.MPI.Request.Testall(entry[0]) else waiting).append(entry)
        except self.MPI.Exception as exc:
            self.failed(exc)  # drops what came from the dead rank; the rest is tested next turn
            return True
        if not finished:
            return False
        self.receiving = waiting
        for _, buffers, callback, _ in finished:
            callback(buffers)
        return True

    def progress_sends(self) -> bool:
        done = False
        try:
            if self.sending:
                still = [entry for entry in self.sending if not entry[0].Test()]
                done = len(still) != len(self.sending)
                self.sending = still
            if self.sending_raw:
                still_raw = [entry for entry in self.sending_raw if not entry[0].Test()]
                done = done or len(still_raw) != len(self.sending_raw)
                self.sending_raw = still_raw
        except self.MPI.Exception as exc:
            self.failed(exc)
            return True
        return done

    def failed(self, exc: Any) -> None:
        """An MPI call failed. Under ULFM that is how a dead rank shows: learn which ranks died
        (asking the communicator, not the error class, which varies), acknowledge them so that
        wildcard receives work again, forget the transfers to and from them, and tell
        ``on_dead``. Any other MPI error is raised (a bug: the loop's failure path ends the job)."""
        if not fault_tolerant():
            raise exc
        MPI = self.MPI
        new = sorted(self._failed_ranks() - self.dead)
        if not new:
            if exc.Get_error_class() == getattr(MPI, "ERR_REVOKED", -1):
                # the driver revoked the communicator: the job ends (finalize_after_failure)
                self.revoked = True
                self.sending, self.sending_raw, self.receiving, self.held = [], [], [], {}
                return
            if exc.Get_error_class() in (MPI.ERR_PROC_FAILED, getattr(MPI, "ERR_PROC_FAILED_PENDING", -1)):
                return  # a failure already handled, seen again by another request
            raise exc
        self.dead.update(new)
        self.deaths += len(new)
        self.sending = [e for e in self.sending if e[2] not in self.dead]
        self.sending_raw = [e for e in self.sending_raw if e[2] not in self.dead]
        lost = [e for e in self.receiving if e[3] in self.dead]
        self.receiving = [e for e in self.receiving if e[3] not in self.dead]
        for request in (r for e in lost for r in e[0]):
            try:
                request.Cancel()
            except self.MPI.Exception:
                pass
        for source in new:
            self.held.pop(source, None)  # a large batch it was sending: never complete
        self.on_dead(new)

    def _failed_ranks(self) -> set:
        """Job ranks whose current process a communicator of this process reports failed
        (acknowledged, so that wildcard receives work again). A number reported by a generation
        older than the one its process joined in is a replaced process's: not counted."""
        MPI = self.MPI
        failed = set()
        for generation, comm in self.comms.items():
            group = comm.Get_failed()
            comm.Ack_failed()
            world = comm.Get_group()
            try:
                ranks = MPI.Group.Translate_ranks(group, list(range(group.Get_size())), world)
            finally:
                group.Free()
                world.Free()
            numbers = self.numbers.get(generation)
            for rank in ranks:
                job_rank = rank if numbers is None else numbers[rank]
                if self.joined.get(job_rank, 0) <= generation:
                    failed.add(job_rank)
        return failed

    def grow(self, replaced: List[int], command: str, args: List[str]) -> int:
        """Replace the dead ranks ``replaced`` by new processes (``command args``, started by rank
        0): every live rank of the job calls this at once (ULFM's Shrink, then MPI_Comm_spawn,
        a merge, and a split that orders the new communicator by job rank). Returns the new
        generation; raises MPI.Exception if a step failed (then nothing changed here)."""
        MPI = self.MPI
        latest = max(self.comms)
        shrunk = self.comms[latest].Shrink()
        inter = merged = None
        try:
            inter = shrunk.Spawn(command, args=args, maxprocs=len(replaced), root=0)
            merged = inter.Merge(high=False)
            grown = merged.Split(0, self.rank)
        finally:
            for made in (merged, inter, shrunk):
                if made is not None:
                    made.Free()
        grown.Set_errhandler(MPI.ERRORS_RETURN)
        numbers = grown.allgather(self.rank)
        generation = latest + 1
        self.comms[generation] = grown
        self._number(generation, numbers)
        for rank in replaced:
            self.joined[rank] = generation
        self.dead.difference_update(replaced)
        self.routed = True
        return generation

    def busy(self) -> bool:
        return bool(self.sending or self.sending_raw)

    def moving(self) -> bool:
        """Whether large data is on its way, which MPI moves only while someone polls. (A small
        message is sent eagerly: its request only waits for the next turn's Test.)"""
        return bool(self.sending_raw or self.receiving or self.held)


class CommLoop:
    """One rank's manager thread. ``agent`` handles downstream messages; ``scheduler`` (rank 0
    only) handles upstream ones; ``local_hook`` sees our own executor threads' reports first."""

    def __init__(self, rank: int, transport: Optional[MPITransport], spin_us: float, max_sleep_us: float,
                 inline_progress: bool = True):
        self.rank = rank
        self.transport = transport
        self.commands: deque = deque()
        self.wake_event = threading.Event()
        self.spin_s = spin_us * 1e-6
        self.max_sleep_s = max_sleep_us * 1e-6
        self.idle_sleep_s = self.max_sleep_s if transport is not None else SINGLE_RANK_IDLE_S
        self.scheduler = None
        self.agent: Optional[Callable[[tuple], None]] = None
        self.local_hook: Optional[Callable[[tuple], bool]] = None
        self.on_forget: Callable[[List[bytes]], None] = lambda object_ids: None
        self.on_failure: Callable[[BaseException], None] = lambda error: None
        self.on_fatal: Optional[Callable[[BaseException], None]] = None  # ends the job (runtime)
        # "pid P on HOST; it held tasks f; actors A": for the message when the loop fails (runtime)
        self.describe: Callable[[], str] = lambda: f"pid {os.getpid()}"
        self.plane = None  # the rank's ObjectPlane
        self.on_fetch_local: Callable[[List[bytes]], None] = lambda ids: None
        self.on_remote: Optional[Callable[[int, tuple], bool]] = None
        self.outbox: Dict[int, List[tuple]] = {}
        self.outbox_since = 0.0  # when a guest's hold first kept the outbox back, or 0.0
        self.refs = RefTable()
        self.running = False
        self.thread: Optional[threading.Thread] = None
        self.thread_ident: Optional[int] = None  # the comm thread's, once it runs
        self.error: Optional[BaseException] = None
        # lent turns (lending.py), where the MPI allows calls from several threads one at a time
        # and HPCRAY_INLINE_PROGRESS allows them
        self.lendable = inline_progress and (transport is None or transport.serialized)
        self.guest_idle_s = self.spin_s if transport is not None else 0.0
        self.lending = Lending()
        # ranks that died (ULFM): the object plane and scheduler go on without them, then this
        self.on_ranks_dead: Callable[[List[int]], None] = lambda ranks: None
        # steps for the end of the next turn, outside any message's handling: they may block in
        # a collective MPI call (replacement.py)
        self.deferred: List[Callable[[], None]] = []
        if transport is not None:
            transport.on_dead = self._ranks_died

    # ---- any thread ----------------------------------------------------------------------
    def post(self, item: tuple) -> None:
        self.commands.append(item)
        self.nudge()

    def defer(self, step: Callable[[], None]) -> None:
        """Run ``step`` at the end of the next turn (any thread)."""
        self.deferred.append(step)
        self.nudge()

    def nudge(self) -> None:
        """Wake the comm thread for what is queued, unless a guest runs the turns (it sees the
        queue in its next turn)."""
        if self.lending.state != GUEST:
            self.wake_event.set()

    def post_and_turn(self, item: tuple) -> None:
        """Post, then run a turn on this thread if the loop is free (no hand-off), else wake it.

        Submissions in a burst go out in batches: the first since the last wait goes at once;
        a later one within ``BATCH_S`` of a guest's last turn only joins the queue; the next lent
        turn (the caller's next submission after the interval, or its get/wait) takes it, or the
        comm thread within ``max_sleep_us``."""
        commands = self.commands
        commands.append(item)
        lending = self.lending
        first = lending.count_submission()
        if not self.lendable:
            self.nudge()
        elif first or time.monotonic() - lending.left_at >= BATCH_S or len(commands) >= BATCH_MAX:
            if not self.lend(None, None, 0.0, max_turns=1, interruptible=False):
                self.nudge()

    def lend(self, finished: Optional[Callable[[], bool]], until: Optional[float], idle_s: float,
             max_turns: int = 0, interruptible: bool = True,
             hold: Optional[Callable[[], bool]] = None) -> bool:
        """Run the loop's turns on the calling thread while it waits: until ``finished()``, the
        monotonic deadline ``until``, ``max_turns`` turns (0: no limit), or ``idle_s`` without
        progress. Returns False, having run nothing, when another guest holds the loop or the
        comm thread did not step back before ``until``. On the main thread the turns are
        shielded from Ctrl-C (interrupts.py): one that arrives ends them early and is raised at
        the end (``interruptible``, outside any other shielded call) or later by the caller.
        While ``hold()`` is true (the guest has more work of its own queued) outgoing batches
        wait, up to ``HOLD_S``, so a burst of results leaves as a few messages."""
        me = threading.get_ident()
        if finished is not None:
            self.lending.end_burst()  # a wait ends a burst of submissions
        if not self.running or me == self.thread_ident:
            return False  # (the comm thread itself, e.g. in a callback it runs: it has the turns)
        shield = SHIELD
        if me != shield.main:
            return self._lend(me, finished, until, idle_s, max_turns, hold, None)
        # a turn cut in the middle could lose a message, and lend's own bookkeeping cut in the
        # middle would leave the loop's locks taken (seen: the job hung at exit)
        shield.depth += 1
        try:
            lent = self._lend(me, finished, until, idle_s, max_turns, hold, shield)
        finally:
            shield.depth -= 1
        if interruptible and not shield.depth:
            shield.raise_pending()
        return lent

    def _lend(self, me, finished, until, idle_s, max_turns, hold, shield) -> bool:
        wait = -1 if until is None else max(0.0, until - time.monotonic())
        entered = self.lending.enter(me, wait, hold)
        if entered is None:
            return False  # another thread is the guest
        gone = True
        if entered:
            try:
                gone = self._guest_turns(finished, until, idle_s, max_turns, shield)
            finally:
                self.lending.leave(gone)
        transport = self.transport
        # the comm thread goes on polling for a guest that gave up, or with what one left behind
        # (a held outbox goes with the guest's next turn, or the comm thread's after its grace)
        if (gone and transport is not None) or self.commands or (self.outbox and not self.outbox_since) \
                or (transport is not None and transport.moving()):
            self.wake_event.set()
        return entered

    def _guest_turns(self, finished, until, idle_s, max_turns, shield) -> bool:
        """The guest's turns; True when it stops for lack of progress or time (it will not be
        back soon) or for a Ctrl-C (``shield``: the main thread's), False when it got what it
        waited for."""
        idle_since = 0.0
        turns = 0
        monotonic = time.monotonic
        while self.running:
            try:
                progress = self.turn()
            except Exception as exc:  # a bug in the loop: fail every waiter, as the comm thread does
                self._failed(exc)
                return True
            turns += 1
            if (finished is not None and finished()) or turns == max_turns:
                return False
            if shield is not None and shield.pending:
                return True
            if progress:
                idle_since = 0.0
                continue
            now = monotonic()
            if until is not None and now >= until:
                return True
            if idle_since == 0.0:
                idle_since = now
            if now - idle_since >= idle_s:
                return True
            os.sched_yield()
        return True

    def call(self, function: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``function`` on the comm thread and return its result (for state views)."""
        box: List[Any] = []
        done = threading.Event()

        def run():
            try:
                box.append((True, function()))
            except BaseException as exc:  # handed back to the caller
                box.append((False, exc))
            done.set()

        self.post((P.CALL, run))
        if not done.wait(timeout):
            raise TimeoutError("hpcray's comm thread did not answer")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._main, name=f"hpcray-comm-{self.rank}", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.running = False
        self.wake_event.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)
        turns = self.lending.turns
        if self.lending.guest != threading.get_ident() and turns.acquire(True, timeout):
            turns.release()  # a guest's last turn has ended: MPI is free for the caller

    # ---- the thread running the turns ------------------------------------------------------
    def send(self, dest: int, msg: tuple) -> None:
        """Send a downstream message (scheduler → rank) or upstream one (rank → rank 0). This
        is the one path for messages within a rank too: rank 0's own messages to its scheduler,
        and the scheduler's to rank 0's client and executor, are handled here at once."""
        if dest == self.rank:
            if P.is_upstream(msg[0]):
                if self.scheduler is not None:  # None while a session is being ended
                    self.scheduler.handle(dest, msg)
            else:
                self.agent(msg)
        else:
            box = self.outbox.get(dest)
            if box is None:
                box = self.outbox[dest] = []
            box.append(P.encode(msg))

    def _main(self) -> None:
        self.thread_ident = threading.get_ident()
        sleep_s = 50e-6
        last_activity = time.monotonic()
        lending = self.lending
        turns = lending.turns
        try:
            while self.running:
                asked = self.wake_event.is_set()
                self.wake_event.clear()
                if lending.comm_steps_back(asked, self.spin_s, self.max_sleep_s, last_activity,
                                           time.monotonic()) or not turns.acquire(False):
                    # A guest runs the turns, or ran them just now and is likely back soon (the
                    # driver between two calls): stay out of its way, unless asked (any post
                    # while no guest runs, or a guest that leaves work behind, sets the event)
                    # or busy with an exchange of its own (a task thread's request, say).
                    self.wake_event.wait(GUEST_WAIT_S if lending.state != FREE else self.max_sleep_s)
                    last_activity = 0.0
                    sleep_s = 50e-6
                    continue
                try:
                    progress = self.turn()
                finally:
                    turns.release()
                if progress:
                    last_activity = time.monotonic()
                    sleep_s = 50e-6
                    continue
                if time.monotonic() - last_activity < self.spin_s:
                    os.sched_yield()  # poll again soon, but let runnable threads (ours too) go first
                    continue
                self.wake_event.wait(sleep_s if self.transport is not None else self.idle_sleep_s)
                sleep_s = min(sleep_s * 2, self.max_sleep_s)
            with turns:
                self.turn()
                self.flush_until_sent(FINAL_FLUSH_S)
        except BaseException as exc:  # a bug here must not hang the job: record and report
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        """A turn failed (a bug in hpcray): stop the loop, fail every waiter instead of hanging,
        then end the job (``on_fatal``) with this rank's traceback: a rank without its loop
        cannot take part in the job any more."""
        self.error = exc
        try:
            where = self.describe()
        except Exception as described:  # (the message must go out all the same)
            where = f"pid {os.getpid()}; what it held is unknown: {described!r}"
        logger.error("hpcray: the loop of rank %d (%s) failed (a bug in hpcray); the job ends", self.rank,
                     where, exc_info=exc)
        self.running = False
        self.on_failure(exc)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    def turn(self) -> bool:
        """One pass of named steps; True when any of them made progress.

        1. ``_run_commands``: local threads' commands; what they make for other ranks (a call,
           a result) leaves at once, before anything arrives. Bookkeeping that sends nothing
           urgent (dropped refs, rank 0's own GET_REQs) is set aside for step 5.
        2. ``_receive``: incoming batches, handled as they come.
        3. ``_schedule``: rank 0 places what became ready.
        4. ``_flush``: this turn's outgoing batches (unless a guest holds them back).
        5. ``_bookkeeping``: what step 1 set aside.
        6. ``_progress_transfers``: completes sends and large receives.
        7. ``_run_deferred``: steps that block in collective MPI calls (replacing dead ranks)."""
        later: List[tuple] = []
        progress = self._run_commands(later) if self.commands else False
        transport = self.transport
        if transport is not None:
            if self.outbox:
                self._flush()
            if self._receive(transport):
                progress = True
        if self.scheduler is not None and self.scheduler.dirty:
            self.scheduler.dispatch()
        if self.outbox:
            progress = True
            self._flush()
        if later:
            self._bookkeeping(later)
        if transport is not None and self._progress_transfers(transport):
            progress = True
        if self.deferred:
            self._run_deferred()
            progress = True
        return progress

    def _run_deferred(self) -> None:
        steps, self.deferred = self.deferred, []
        self._send_outbox()  # (what this turn made leaves before the rank blocks)
        for step in steps:
            step()

    def _run_commands(self, later: List[tuple]) -> bool:
        commands = self.commands
        popleft = commands.popleft
        local_scheduler = self.scheduler is not None
        while commands:
            item = popleft()
            kind = item[0]
            if kind == DECREF or (kind == P.GET_REQ and local_scheduler):
                later.append(item)
            else:
                self._local(item)
        return True

    def _receive(self, transport: MPITransport) -> bool:
        got = transport.receive()
        for source, batch in got:
            self._remote(source, batch)
        return bool(got)

    def _flush(self) -> None:
        """Send the outbox, one batch per destination, unless the guest holds it back."""
        if not self._holding():
            self._send_outbox()

    def _send_outbox(self) -> None:
        transport = self.transport
        outbox = self.outbox
        self.outbox = {}  # (first: a send that meets a dead rank makes the scheduler send more)
        self.outbox_since = 0.0
        for dest, batch in outbox.items():
            transport.send(dest, batch)

    @staticmethod
    def _progress_transfers(transport: MPITransport) -> bool:
        progress = transport.progress_sends()
        if transport.receiving and transport.progress_receives():
            progress = True
        return progress

    def _holding(self) -> bool:
        """Whether the outbox waits for the guest's next results (``lend(hold=...)``), which it
        does for at most ``HOLD_S``."""
        hold = self.lending.hold
        if hold is None or not hold():
            return False
        now = time.monotonic()
        if not self.outbox_since:
            self.outbox_since = now
        return now - self.outbox_since < HOLD_S

    def _bookkeeping(self, items: List[tuple]) -> None:
        """Dropped refs (and rank 0's own GET_REQs), in order, once the turn's batches are out.
        The local copies of the objects no ref is left to go in one call (one lock)."""
        decref = self.refs.decref
        forgotten = []
        for item in items:
            if item[0] != DECREF:
                self._local(item)
            elif decref(item[1]):
                forgotten.append(item[1])
                self.send(0, (P.HOLD, item[1], -1))
        if forgotten:
            self.on_forget(forgotten)

    def _local(self, item: tuple) -> None:
        kind = item[0]
        if kind == P.TASK_DONE or kind == P.SUBMIT:
            self._upstream(kind, item)
        elif kind == INCREF:
            object_id = item[1]
            if job_of(object_id) == self.refs.job and self.refs.incref(object_id):
                self.send(0, (P.HOLD, object_id, 1))
        elif kind == P.CALL:
            item[1]()
        elif kind == P.FETCH_LOCAL:
            self.on_fetch_local(item[1])
        elif kind == P.ADOPT:
            if not self.refs.adopt(item[1]):
                self.send(0, (P.HOLD, item[1], -1))  # we held it already: undo the extra count
        else:
            self._upstream(kind, item)

    def _upstream(self, kind: int, item: tuple) -> None:
        """A local thread's message for the scheduler: note what this rank now holds, let the
        executor see its own reports first, keep large values here; then send it."""
        if kind == P.SUBMIT:
            self.refs.submitted(item[1].return_ids)
        elif kind == P.PG_READY:
            self.refs.made(item[2])
        elif kind == P.PUT:
            self.refs.made(item[1])
            if self.plane is not None:
                item = (P.PUT, item[1], self.plane.keep_if_large(item[1], item[2]))
        elif kind == P.STREAM_ITEM:
            if self.plane is not None:  # a large item stays here, like a large return value
                item = (kind, item[1], item[2], self.plane.keep_if_large(item_id(item[1], item[2]), item[3]))
        elif kind == P.TASK_DONE or kind == P.BLOCKED or kind == P.UNBLOCKED:
            if self.local_hook is not None and not self.local_hook(item):
                return
            if kind == P.TASK_DONE and item[2] and self.plane is not None:
                values = self.plane.keep_returns(item[1], item[2])
                if values is not item[2]:
                    item = (kind, item[1], values, item[3], item[4])
        self.send(0, item)

    def _remote(self, source: int, batch: List[tuple]) -> None:
        scheduler = self.scheduler
        on_remote = self.on_remote
        decode = P.decode
        for msg in batch:
            msg = decode(msg)
            if P.is_peer(msg[0]):  # rank to rank: large values (object_plane.py)
                self._peer(source, msg)
            elif on_remote is not None:
                on_remote(source, msg)
            elif scheduler is not None:
                scheduler.handle(source, msg)
            else:
                self.agent(msg)

    def _peer(self, source: int, msg: tuple) -> None:
        plane = self.plane
        if plane is None:
            return
        if msg[0] == P.FETCH:
            plane.on_fetch(source, msg[1])
        elif msg[0] == P.OBJECT_DATA:
            plane.on_object_data(msg[1], msg[2])
        elif msg[0] == P.OBJECT_DATA_RAW:
            plane.on_object_data_raw(source, *msg[1:])

    def _ranks_died(self, ranks: List[int]) -> None:
        if self.plane is not None:
            self.plane.on_ranks_dead(ranks)
        if self.scheduler is not None:
            self.scheduler.on_ranks_dead(ranks)
        self.on_ranks_dead(ranks)

    def flush_until_sent(self, timeout: float) -> bool:
        """Push out what is queued and wait (polling, with sleeps) until MPI took it."""
        transport = self.transport
        if transport is None:
            return True
        self._send_outbox()
        deadline = time.monotonic() + timeout
        backoff = Backoff()
        while transport.busy() and time.monotonic() < deadline:
            if not transport.progress_sends():
                backoff.sleep()
        return not transport.busy()
