"""The client side of a rank: what user threads call (submit, put, get, wait), and the rank's
store of values it has received.

User threads append commands to the comm thread's queue and wait on a condition that the loop
signals when values arrive. Where the loop lends its turns (comm.CommLoop.lend), a submitting or
waiting thread that runs no task runs those turns itself instead of handing off to the comm
thread. The same class serves the driver and tasks running on worker ranks.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import operator
import queue
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .. import exceptions
from . import context
from . import protocol as P
from .config import WAKE_S
from .interrupts import SHIELD
from .object_ref import DECREF, IdSource, ObjectRef, object_id_of
from .serialization import SerializedValue, deserialize, serialize, try_serialize
from .streams import item_id
from .sync import SturdyCondition
from .timeline import RECORDER

logger = logging.getLogger("hpcray")

#: kept under the id after a stream's last item (compared by identity): the stream has ended
STREAM_END_MARK = serialize(None)
_location = operator.attrgetter("location")
#: what wait() reads for an id with no value here (a location no value has)
_ABSENT_LOCATION = -1
_ABSENT = SerializedValue(b"", [], [], location=_ABSENT_LOCATION)
#: the count a dropped stream reports as taken (no producer is ever that far ahead)
STREAM_DROPPED = 1 << 62


class _Waiter:
    """One thread's wait in get/wait: how many of its objects are here, and whether one failed."""

    __slots__ = ("have", "error", "need_value")

    def __init__(self, have: int, need_value: bool):
        self.have = have
        self.error = False
        self.need_value = need_value  # False for wait(fetch_local=False): a stub is enough


class Completions:
    """The thread that completes futures (``ref.future()``, ``await ref``) and so runs their
    done-callbacks: user code, which must never run inside a loop turn (a callback that blocks
    would stop the rank's progress). Started on first use."""

    def __init__(self, rank: int):
        self.rank = rank
        self.queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self.thread: Optional[threading.Thread] = None
        self.lock = threading.Lock()

    def post(self, callbacks: List[Callable[[SerializedValue], None]], value: SerializedValue) -> None:
        if self.thread is None:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._main, name=f"hpcray-futures-{self.rank}",
                                                   daemon=True)
                    self.thread.start()
        self.queue.put((callbacks, value))

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)

    def _main(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            callbacks, value = item
            for callback in callbacks:
                try:
                    callback(value)
                except BaseException:  # a user's callback, even SystemExit: logged; the thread lives on
                    logger.exception("hpcray: a future's done-callback raised")


def deserialize_result(value: SerializedValue, object_id: bytes) -> Any:
    """The value of an object, for get(); one that cannot be unpickled here is a RaySystemError
    naming the object (as Ray's), not whatever its unpickling raised."""
    try:
        return deserialize(value, object_id)
    except Exception as exc:
        raise exceptions.RaySystemError(
            f"Could not deserialize the value of object {object_id.hex()}: {type(exc).__name__}: {exc}",
            traceback.format_exc()) from exc


class CoreClient:
    """Per-rank, per-session entry point used by the public API."""

    def __init__(self, rank: int, job: int, loop: Any):
        self.rank = rank
        self.job = job
        self.ids = IdSource(job, rank)
        self.post = loop.post  # append to the comm thread's queue and wake it
        self.loop = loop
        self.store: Dict[bytes, SerializedValue] = {}
        self.requested: set = set()
        # ``with self.lock`` where no one waits or is notified: the Condition's own lock, taken
        # without the Condition's Python-level __enter__/__exit__ (two calls per use)
        self.lock = threading.RLock()
        self.cond = SturdyCondition(self.lock)
        self.callbacks: Dict[bytes, List[Callable[[SerializedValue], None]]] = {}
        self.exported: set = set()
        self.broken: Optional[BaseException] = None  # set when the comm thread died
        self.waiters: Dict[bytes, List["_Waiter"]] = {}
        self.plane = None  # the rank's ObjectPlane, for values that live on other ranks
        self.want_values: set = set()  # ids whose value (not only a stub) a caller waits for
        self.sleepers = 0  # threads asleep on ``cond`` (changed only under it)
        # get/wait calls that had to wait, for the status table's progress lines (under ``lock``):
        # waiter -> (thread name, objects asked, objects needed, waiting since: time.time())
        self.long_waits: Dict[_Waiter, Tuple[str, int, int, float]] = {}
        # rank 0: the scheduler is in this process and delivers the returns of the tasks this
        # rank submits as they arrive, unasked (Scheduler.on_submit subscribes us)
        self.returns_pushed = rank == 0
        self.completions = Completions(rank)
        self.streams: Dict[bytes, int] = {}  # streams read here -> items arrived (loop turns only)

    # ---- user threads -----------------------------------------------------------------
    def submit(self, spec: P.TaskSpec, fn_blob: bytes) -> List[ObjectRef]:
        if spec.fn_id not in self.exported:
            self.exported.add(spec.fn_id)
            spec.fn_blob = fn_blob
        if self.returns_pushed:
            self.requested.update(spec.return_ids)
        if self.loop.lendable and context.current() is None:
            self.loop.post_and_turn((P.SUBMIT, spec))
        else:
            self.post((P.SUBMIT, spec))
        counted = ObjectRef.counted  # the SUBMIT counts these refs (no INCREF each)
        return [counted(object_id) for object_id in spec.return_ids]

    # ---- streams (generators.py) ---------------------------------------------------------
    def open_stream(self, task_id: bytes) -> None:
        """Before the streaming task is submitted: its items will be read here."""
        self.post((P.CALL, lambda: self.streams.setdefault(task_id, 0)))

    def await_stream_item(self, object_id: bytes, timeout: Optional[float]) -> bool:
        """Wait until this item of a stream is here (True) or the stream ended before it."""
        self.requested.add(object_id)  # pushed to us: never asked for
        self._wait_for([object_id], 1, timeout, fail_fast=False, need_value=False)
        return self.store.get(object_id) is not STREAM_END_MARK  # (kept while the stream lives)

    def stream_taken(self, task_id: bytes, taken: int) -> None:
        """Backpressure: the producer may run ahead of ``taken`` by its limit."""
        self.post((P.STREAM_ACK, task_id, taken))

    def drop_stream(self, task_id: bytes, taken: int) -> None:
        """The generator is gone (any thread, even the collector's inside a locked section: so
        only a command is queued): the items nobody took are released in a loop turn."""
        commands = self.loop.commands
        commands.append((P.CALL, lambda: self._release_stream(task_id, taken)))

    # ---- requests of the public layer (it builds no message itself) ------------------------
    def cancel(self, task_id: bytes, force: bool, recursive: bool) -> None:
        self.post((P.CANCEL, task_id, force, recursive))

    def query(self, name: Any, timeout: float = 60.0) -> Any:
        """A view of the scheduler's state ("resources", "nodes", ...)."""
        reply = self.new_reply_id()
        self.post((P.QUERY, name, reply))
        return self.await_reply(reply, timeout)

    def lookup_actor(self, name: str, namespace: str) -> tuple:
        """(actor id, handle object id, class metadata) of a named actor; its handle is ours."""
        reply = self.new_reply_id()
        self.post((P.GET_ACTOR, name, namespace, reply))
        found = self.await_reply(reply)
        self.adopt(found[1])
        return found

    def adopt(self, handle_id: bytes) -> None:
        """The scheduler counted a hold of this handle object for this rank (get_actor, an
        existing named actor): the ObjectRef about to be made must not count it again."""
        self.post((P.ADOPT, handle_id))

    def kill_actor(self, actor_id: bytes, no_restart: bool) -> None:
        self.post((P.KILL, actor_id, no_restart))

    def not_arrived(self, object_ids: Any) -> List[bytes]:
        """Those of ``object_ids`` whose values (or stubs) are not here yet."""
        store = self.store
        return [object_id for object_id in object_ids if object_id not in store]

    def want(self, object_ids: List[bytes]) -> None:
        """Ask for these objects now (their values come here as they are set)."""
        self._request(object_ids)

    def create_group(self, bundles: List[Dict[str, float]], strategy: str, name: str) -> bytes:
        group_id = self.new_task_id()
        self.post((P.PG_CREATE, group_id, bundles, strategy, name))
        return group_id

    def group_ready(self, group_id: bytes, handle: Any) -> ObjectRef:
        """A ref that gets ``handle`` as its value once the group is placed."""
        object_id = object_id_of(self.new_task_id(), 0)
        # posted before the ref exists, like a submit
        self.post((P.PG_READY, group_id, object_id, serialize(handle)))
        return ObjectRef(object_id)

    def remove_group(self, group_id: bytes) -> None:
        self.post((P.PG_REMOVE, group_id))

    def new_task_id(self) -> bytes:
        return self.ids.next_task_id()

    def new_reply_id(self) -> bytes:
        """An id under which the scheduler answers a question (it arrives like an object)."""
        reply = object_id_of(self.new_task_id(), 0)
        self.requested.add(reply)
        return reply

    def await_reply(self, reply: bytes, timeout: float = 120.0) -> Any:
        """The scheduler's answer under ``reply``; an error answer is raised."""
        self._wait_for([reply], 1, timeout, fail_fast=False)
        with self.lock:
            value = self.store.pop(reply)
        self.requested.discard(reply)
        result = deserialize(value)
        if value.is_error:
            raise result
        return result

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                            "this, you can wrap the ObjectRef in a list and call 'put' on it.")
        return self.put_serialized(try_serialize(value, "the value passed to put():", shared=True))

    def put_serialized(self, serialized: SerializedValue) -> ObjectRef:
        """``put`` of a value serialized already (``shared``: a large one may lie in the arena)."""
        object_id = object_id_of(self.new_task_id(), 0)
        with self.lock:
            self.store[object_id] = serialized
        self.post((P.PUT, object_id, serialized))
        return ObjectRef(object_id)

    def get(self, refs: Sequence[ObjectRef], timeout: Optional[float]) -> List[Any]:
        ids = [ref.binary() for ref in refs]
        self._wait_for(ids, len(ids), timeout, fail_fast=True)
        store = self.store
        found = [store.get(object_id) for object_id in ids]
        for object_id, value in zip(ids, found):
            if value is not None and value.is_error:
                self.post((P.HANDLED, object_id))
                raise deserialize_result(value, object_id)  # the first error in list order, at once
        try:
            return [deserialize(value, object_id) for value, object_id in zip(found, ids)]
        except Exception:  # (the happy path pays no extra call) name the value that failed
            for value, object_id in zip(found, ids):
                deserialize_result(value, object_id)
            raise

    def wait(self, refs: List[Any], num_returns: int, timeout: Optional[float],
             fetch_local: bool = True, ids: Optional[List[bytes]] = None):
        """ObjectRefs, and generators (ready when their next item or their end is here); ``ids``:
        the refs' ids where the caller has them (plain ObjectRefs only)."""
        if ids is None:
            ids = []
            append = ids.append
            for ref in refs:
                if isinstance(ref, ObjectRef):
                    append(ref.binary())
                else:
                    next_id = ref.next_id()
                    self.requested.add(next_id)  # pushed to us: never asked for
                    append(next_id)
        ready, not_ready = self._split(refs, ids, num_returns, fetch_local)
        if len(ready) < num_returns:  # (else nothing to wait for: no lock, no request)
            try:
                self._wait_for(ids, num_returns, timeout, fail_fast=False, need_value=fetch_local)
            except exceptions.GetTimeoutError:
                pass  # wait() returns what is ready when the time is up
            ready, not_ready = self._split(refs, ids, num_returns, fetch_local)
        return ready, not_ready

    def _split(self, refs: List[Any], ids: List[bytes], num_returns: int, fetch_local: bool):
        """(ready, not ready), in input order, at most ``num_returns`` ready; with ``fetch_local``
        a value held on another rank is not ready until it is here."""
        values = list(map(self.store.get, ids, itertools.repeat(_ABSENT)))
        here = set(map(_location, values))
        if here == {None} or (not fetch_local and _ABSENT_LOCATION not in here):
            return refs[:num_returns], refs[num_returns:]  # all ready (C loops only; slices are new lists)
        ready, not_ready = [], []
        room = num_returns
        for ref, value in zip(refs, values):
            if room and value is not _ABSENT and (value.location is None or not fetch_local):
                ready.append(ref)
                room -= 1
            else:
                not_ready.append(ref)
        return ready, not_ready

    def future_of(self, ref: ObjectRef) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        keep = ref  # the ref must live until the value is in, or the store may drop it

        def complete(value: SerializedValue) -> None:
            _ = keep
            if not future.set_running_or_notify_cancel():
                return  # cancelled (asyncio.wait_for timed out, say): nobody wants it
            try:
                result = deserialize_result(value, object_id)
            except BaseException as exc:  # a value that cannot be unpickled fails the future
                future.set_exception(exc)
                return
            if value.is_error:
                self.post((P.HANDLED, object_id))
                future.set_exception(result)
            else:
                future.set_result(result)

        object_id = ref.binary()
        with self.lock:
            value = self.store.get(object_id)
            if value is not None and value.location is not None:
                value = None  # only a stub is here: the value must be fetched first
            if value is None:
                self.callbacks.setdefault(object_id, []).append(complete)
        if value is not None:
            complete(value)  # (on this thread: it is the caller's, not a loop turn)
        else:
            self._request([object_id])
        return future

    def _request(self, ids: List[bytes], need_value: bool = True, lending: bool = False) -> None:
        """Ask for the objects ``ids``. ``lending``: the caller runs the loop's next turn itself,
        so the comm thread is not woken."""
        post = self.loop.commands.append if lending else self.post
        fresh = [i for i in ids if i not in self.requested]
        if fresh:
            self.requested.update(fresh)
            post((P.GET_REQ, fresh))
        if need_value:
            self.want_values.update(ids)
            store = self.store
            stubs = [i for i in ids if i in store and store[i].location is not None]
            if stubs:
                post((P.FETCH_LOCAL, stubs))

    def _wait_for(self, ids: List[bytes], count: int, timeout: Optional[float], fail_fast: bool,
                  need_value: bool = True) -> None:
        """Wait until ``count`` of ``ids`` are here (or, with fail_fast, any one is an error).

        Each wait registers a small _Waiter on the ids still missing; a delivery bumps the
        waiters of its id, so a wake-up costs O(1), not a rescan of every id.
        """
        store = self.store
        if count == len(ids):
            # Everything here already (the stream's next item, a value got twice): no lock, so
            # no convoy with the loop's deliveries. A value stays in the store while the caller
            # holds its ref, and a dict read is atomic.
            for object_id in ids:
                value = store.get(object_id)
                if value is None or (need_value and value.location is not None):
                    break
            else:
                return
        unique = set(ids)
        count = min(count, len(unique))
        with self.lock:
            missing = []
            failed = False  # one of them is here and is an error
            for object_id in unique:
                value = store.get(object_id)
                if value is None or (need_value and value.location is not None):
                    missing.append(object_id)
                elif value.is_error:
                    failed = True
            have = len(unique) - len(missing)
            if have >= count or (fail_fast and failed):
                return
            waiter = _Waiter(have, need_value)
            for object_id in missing:
                self.waiters.setdefault(object_id, []).append(waiter)
        task = context.current()
        loop = self.loop
        # A thread that is not running a task (a cancel interrupts tasks anywhere) makes the
        # loop's progress itself first, for as long as progress keeps coming (comm.CommLoop.lend).
        lend = loop.lend if task is None and loop.lendable else None
        # the main thread inside a shielded call: a Ctrl-C is raised here, between two waits
        shield = SHIELD if task is None and SHIELD.depth and SHIELD.on_main() else None
        self._request(missing, need_value, lending=lend is not None)
        deadline = None if timeout is None else time.monotonic() + timeout
        blocked = False
        started = time.time()  # for the timeline, where this wait had to wait at all
        waited = False

        def satisfied() -> bool:
            return waiter.have >= count or (fail_fast and waiter.error)
        try:
            while True:
                if shield is not None:
                    shield.raise_pending()
                with self.lock:
                    if satisfied():
                        break
                    if not waited:
                        waited = True
                        self.long_waits[waiter] = (threading.current_thread().name, len(unique), count, started)
                    if self.broken is not None:
                        raise exceptions.RaySystemError(f"hpcray's comm thread failed: {self.broken!r}")
                    remaining = None
                    if deadline is not None:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise exceptions.GetTimeoutError(
                                f"Get timed out: some object(s) not ready after {timeout} s.")
                    if lend is None:
                        if task is not None:
                            if not blocked:
                                blocked = True  # give this task's CPU back while it waits
                                self.post((P.BLOCKED, task.task_id))
                            # wake now and then, so a cancel (KeyboardInterrupt) can land
                            remaining = WAKE_S if remaining is None else min(remaining, WAKE_S)
                        elif shield is not None:  # wake now and then, to see a Ctrl-C
                            remaining = WAKE_S if remaining is None else min(remaining, WAKE_S)
                        self.sleepers += 1
                        try:
                            self.cond.wait(remaining)
                        finally:
                            self.sleepers -= 1
                        continue
                if not lend(satisfied, deadline, loop.guest_idle_s):
                    loop.nudge()  # our request waits for the comm thread or another guest
                lend = None  # once: a long wait sleeps on the condition
        finally:
            with self.lock:
                self.long_waits.pop(waiter, None)
                for object_id in missing:
                    registered = self.waiters.get(object_id)
                    if registered and waiter in registered:
                        registered.remove(waiter)
                        if not registered:
                            del self.waiters[object_id]
            if blocked:
                self.post((P.UNBLOCKED, task.task_id))
            if waited:
                RECORDER.complete("wait for objects", "get", started, {"objects": len(ids), "needed": count})

    def wait_progress(self) -> List[Tuple[str, int, int, int, float]]:
        """This process's get/wait calls that are waiting: (thread name, objects asked, objects
        needed, objects here, seconds waited) each, the longest wait first."""
        now = time.time()
        with self.lock:
            waits = [(name, asked, needed, min(waiter.have, needed), now - since)
                     for waiter, (name, asked, needed, since) in self.long_waits.items()]
        return sorted(waits, key=lambda wait: -wait[4])

    # ---- comm thread --------------------------------------------------------------------
    def on_stream_push(self, task_id: bytes, index: int, value: SerializedValue) -> None:
        """An item of a stream read here: counted once for this rank (``next()`` hands the count
        to its ref) and kept; released at once if the generator is gone."""
        object_id = item_id(task_id, index)
        self.loop.refs.submitted((object_id,))
        if task_id not in self.streams:
            self.loop.commands.append((DECREF, object_id))
            return
        self.streams[task_id] = index + 1
        self.requested.add(object_id)
        self.deliver(object_id, value)

    def on_stream_end(self, task_id: bytes, total: int) -> None:
        if task_id in self.streams:
            end = item_id(task_id, total)
            self.requested.add(end)
            self._store(end, STREAM_END_MARK)

    def _release_stream(self, task_id: bytes, taken: int) -> None:
        arrived = self.streams.pop(task_id, None)
        if arrived is None:
            return
        # nobody reads the stream any more: a producer held back by backpressure may finish
        self.loop.commands.append((P.STREAM_ACK, task_id, STREAM_DROPPED))
        for index in range(taken, arrived):
            self.loop.commands.append((DECREF, item_id(task_id, index)))
        end = item_id(task_id, arrived)
        with self.lock:
            if self.store.get(end) is STREAM_END_MARK:
                del self.store[end]
        self.requested.discard(end)

    def deliver(self, object_id: bytes, value: SerializedValue) -> None:
        plane = self.plane
        if plane is not None and plane.reasked:  # a value whose holder died: made again, or lost
            plane.answer_refetch(object_id, value)  # (rank_loss.on_refetch); this client's too:
        if object_id not in self.requested:
            return  # every local ref was dropped while the value was on its way
        if value.location is not None and self.plane is not None:
            if value.location != self.rank:
                self._store(object_id, value)  # ready, the value itself is elsewhere
            if value.location == self.rank or object_id in self.want_values:
                self.plane.resolve(object_id, value, lambda real: self._store(object_id, real))
            return
        self._store(object_id, value)

    def fetch_stubs(self, ids: List[bytes]) -> None:
        """Comm thread: a caller now wants the values of objects known only by their stubs."""
        for object_id in ids:
            value = self.store.get(object_id)
            if value is not None and value.location is not None and self.plane is not None:
                self.plane.resolve(object_id, value, lambda real, oid=object_id: self._store(oid, real))

    def _store(self, object_id: bytes, value: SerializedValue) -> None:
        if object_id not in self.requested:
            return
        stub = value.location is not None
        with self.lock:
            self.store[object_id] = value
            callbacks = None if stub else self.callbacks.pop(object_id, None)
            waiting = self.waiters.get(object_id)
            if waiting:
                keep = []
                for waiter in waiting:
                    if stub and waiter.need_value:
                        keep.append(waiter)
                        continue
                    waiter.have += 1
                    if value.is_error:
                        waiter.error = True
                if keep:
                    self.waiters[object_id] = keep
                else:
                    del self.waiters[object_id]
                if self.sleepers:  # (a waiter running the loop's turns itself is not asleep)
                    self.cond.notify_all()
        if callbacks:
            self.completions.post(callbacks, value)

    def fail_all(self, error: BaseException) -> None:
        """The comm thread died: every waiting get/wait raises instead of hanging."""
        with self.lock:
            self.broken = error
            callbacks = [cb for cbs in self.callbacks.values() for cb in cbs]
            self.callbacks.clear()
            self.cond.notify_all()
        failure = serialize(exceptions.RaySystemError(f"hpcray's comm thread failed: {error!r}"), is_error=True)
        if callbacks:
            self.completions.post(callbacks, failure)

    def forget(self, object_ids: List[bytes]) -> None:
        """No ObjectRef to these objects is left on this rank: drop the local copies."""
        store = self.store
        with self.lock:
            for object_id in object_ids:
                store.pop(object_id, None)
        self.requested.difference_update(object_ids)
        self.want_values.difference_update(object_ids)
