"""The executor of a rank: runs the tasks the scheduler sends it, in threads.

    EXECUTE ─► ledger.assign ─► (fits) ─► work queue ─► executor thread: load function,
                    │ (no room: waits FIFO)              rebuild arguments, call, pickle returns
                    ▼                                                 │
              started when a task ends or blocks ◄── TASK_DONE / BLOCKED (via the comm thread)

The loop's turns own the ledger and the pending table; executor threads only run user code and
post their results back through the rank's command queue. Threads are reused: a new one is made
only when every existing one is busy (or blocked in ``get``).
"""

from __future__ import annotations

import ctypes
import inspect
import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Dict, List, Optional

from .. import exceptions
from . import context, object_ref
from . import protocol as P
from .config import WAKE_S
from .generators import DynamicObjectRefGenerator
from .object_plane import resolve_all
from .options import RetryPolicy
from .protocol import TaskSpec
from .resources import RankLedger
from .serialization import SerializedValue, deserialize, loads, serialize, try_serialize
from .sync import SturdyCondition
from .timeline import RECORDER

logger = logging.getLogger("hpcray")

#: the timeline's category of each kind of call (timeline.py)
_CATEGORIES = {P.TASK: "task", P.ACTOR_CREATE: "actor_creation", P.ACTOR_METHOD: "actor_call"}

class ArgRef:
    """Stands in the pickled arguments for the i-th top-level ObjectRef argument."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index

    def __reduce__(self):
        return (ArgRef, (self.index,))


NO_ARGUMENTS = serialize(([], {}))  # what every call without arguments carries (never changed)
_NO_ARGUMENTS_DATA = NO_ARGUMENTS.data
#: what a call whose arguments travel as an object carries: they are its last dependency
IN_LAST_DEPENDENCY = serialize("hpcray: the arguments are the last dependency")
_IN_LAST_DEPENDENCY_DATA = IN_LAST_DEPENDENCY.data


def rebuild_arguments(args: SerializedValue, values: List[SerializedValue], ids: List[bytes]):
    if args.data == _NO_ARGUMENTS_DATA:
        return [], {}  # (it arrives as a copy: compared by its bytes)
    for value in values:
        if value.is_error:  # an argument could not be fetched (ObjectLostError)
            raise deserialize(value)
    if args.data == _IN_LAST_DEPENDENCY_DATA:  # large arguments, read where they lie (calls.py)
        call_args, call_kwargs = deserialize(values[-1], ids[-1])
        values, ids = values[:-1], ids[:-1]
    else:
        call_args, call_kwargs = deserialize(args)
    if values:
        resolved = [deserialize(v, object_id) for v, object_id in zip(values, ids)]
        call_args = [resolved[a.index] if type(a) is ArgRef else a for a in call_args]
        call_kwargs = {k: resolved[v.index] if type(v) is ArgRef else v for k, v in call_kwargs.items()}
    return call_args, call_kwargs


def cancelled_value(task_id: bytes) -> SerializedValue:
    """What a task or call cancelled before it started leaves (Ray: a TaskCancelledError)."""
    return serialize(exceptions.TaskCancelledError(task_id.hex()), is_error=True)


def interrupted_value(spec: TaskSpec, rank: int, ip: str) -> SerializedValue:
    """What a task or call cancelled while it ran leaves: as on Ray, an error that is both a
    RayTaskError and a TaskCancelledError."""
    cause = exceptions.TaskCancelledError(spec.task_id.hex())
    error = exceptions.RayTaskError(spec.name, f"TaskCancelledError: task {spec.task_id.hex()} was "
                                    "cancelled while it ran", cause, pid=os.getpid(), ip=ip, rank=rank)
    return serialize(error.as_instanceof_cause(), is_error=True)


def host_address() -> str:
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def error_value(name: str, exc: BaseException, rank: int, ip: str) -> SerializedValue:
    """The error a failed task leaves in its return objects (RayTaskError + the user's type)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith("hpcray._private"):
        tb = tb.tb_next  # show the user's frames, not the executor's
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    cause: Optional[BaseException] = exc
    if isinstance(exc, exceptions.RayTaskError):
        cause = exc.cause
        text = f"{text}\n{exc}"
    elif isinstance(exc, exceptions.RayError):
        return serialize(exc, is_error=True)
    error = exceptions.RayTaskError(name, text, cause, pid=os.getpid(), ip=ip, rank=rank)
    try:
        value = serialize(error.as_instanceof_cause(), is_error=True)
        loads(value.data)  # it must also unpickle (an __init__ that needs more arguments does not)
        return value
    except Exception as pickling_error:
        substitute = exceptions.RaySystemError(
            f"{type(cause).__name__}: {cause} (the exception could not be pickled and unpickled: "
            f"{type(pickling_error).__name__}: {pickling_error})")
        plain = exceptions.RayTaskError(name, text, substitute, pid=os.getpid(), ip=ip, rank=rank)
        return serialize(plain, is_error=True)


#: the environment overlay of a task with no GPU and no env_vars (read only: shared by all)
NO_GPU_ENV = {"CUDA_VISIBLE_DEVICES": ""}


def task_environ(gpus: List[str], env_vars: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment overlay a task or actor call sees: its ``env_vars`` and the GPUs it was
    given, no others (none: CUDA_VISIBLE_DEVICES empty, as Ray)."""
    if gpus or env_vars:
        return dict(env_vars or {}, CUDA_VISIBLE_DEVICES=",".join(gpus))
    return NO_GPU_ENV


class Executor:
    """Runs tasks (and hosts actors) on this rank. ``on_*`` methods run in the loop's turns (the
    comm thread, or an idle pool thread the turns are lent to: ``_next_work``)."""

    def __init__(self, rank: int, resources: Dict[str, float], gpu_ids: List[str], loop: Any):
        from .actor_host import ActorHost
        self.rank = rank
        self.ip = host_address()
        self.ledger = RankLedger(resources)
        self.gpu_ids = gpu_ids
        self.gpu_use: Dict[str, float] = {g: 0.0 for g in gpu_ids}
        self._gpus_of: Dict[bytes, tuple] = {}
        self.loop = loop  # the rank's CommLoop
        self.post = loop.post
        self.pending: Dict[bytes, tuple] = {}
        # queued tasks' claim cells, and the job's board of them (claims.py; None: no window)
        self.claims: Dict[bytes, tuple] = {}
        self.board: Any = None
        self.blobs: Dict[bytes, bytes] = {}
        self.functions: Dict[bytes, Any] = {}
        self.session = 0
        self.plane = None  # the rank's ObjectPlane: fetches large arguments from their ranks
        self.fetching: set = set()  # tasks whose large arguments are still on their way
        self.launch_when_fetched: set = set()
        # Cancelling a running task raises KeyboardInterrupt in its thread. Both tables change
        # under _lock only, so the interrupt reaches a thread only while it runs that task.
        self.launched: set = set()  # tasks handed to a pool thread, not started yet
        self.threads: Dict[bytes, tuple] = {}  # running task -> (thread ident, session, name)
        self.cancelled: set = set()
        self.setup_error: Optional[SerializedValue] = None  # the session's setup hook failed here
        self._targeted: set = set()  # threads sent an interrupt that may not have landed yet
        self.host = ActorHost(self)
        self._work: "queue.SimpleQueue" = queue.SimpleQueue()
        self._idle = 0
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._pool_idents: set = set()
        self._lender: Optional[int] = None  # the idle pool thread lending itself to the loop
        self._direct: deque = deque()  # at most one work item handed straight to it
        # backpressure of streaming tasks running here: items their owners have taken
        self.stream_consumed: Dict[bytes, int] = {}
        self._consumed = SturdyCondition()

    # ---- comm thread --------------------------------------------------------------------
    def handle(self, msg: tuple) -> None:
        """A downstream message for this rank's executor or actors."""
        kind = msg[0]
        if (kind == P.EXECUTE or kind == P.ACTOR_CALL) and self.setup_error is not None:
            # the session's worker_process_setup_hook failed here: nothing runs (setup_hook.py)
            self.post((P.TASK_DONE, msg[1].task_id, None, self.setup_error, False))
        elif kind == P.EXECUTE:
            self.on_execute(msg[1], msg[2], msg[3], msg[4])
        elif kind == P.ACTOR_CALL:
            self.host.on_call(msg[1], msg[2])
        elif kind == P.STEAL:
            self.on_steal(msg[1])
        elif kind == P.ACTOR_KILL:
            self.host.on_kill(msg[1], msg[2])
        elif kind == P.ACTOR_TERMINATE:
            self.host.on_terminate(msg[1])
        elif kind == P.CANCEL_TASK:
            self.on_cancel(msg[1])
        elif kind == P.FREE:
            if self.plane is not None:
                self.plane.on_free(msg[1])
        elif kind == P.BUNDLE_RESERVE:
            for task_id in self.ledger.reserve(msg[1], msg[2], msg[3]):
                self.launch(task_id)
        elif kind == P.BUNDLE_RELEASE:
            for task_id in self.ledger.release(msg[1]):
                self.launch(task_id)
        elif kind == P.STREAM_CONSUMED:
            with self._consumed:
                if msg[2] > self.stream_consumed.get(msg[1], 0):
                    self.stream_consumed[msg[1]] = msg[2]
                    self._consumed.notify_all()

    def on_execute(self, spec: TaskSpec, blob: Optional[bytes], values: List[SerializedValue],
                   claim: Optional[tuple] = None) -> None:
        if blob is not None:
            self.blobs[spec.fn_id] = blob
        if spec.kind == P.ACTOR_CREATE:
            self.host.register(spec)
        self.pending[spec.task_id] = (spec, values)
        if claim is not None:  # queued here: the scheduler may take it back (claims.py)
            self.claims[spec.task_id] = claim
        if self.plane is not None and any(v.location is not None for v in values):
            task_id = spec.task_id
            self.fetching.add(task_id)
            resolve_all(self.plane, spec.deps, values, lambda real: self._fetched(task_id, real))
        if self.ledger.assign(spec.task_id, spec.demand):
            self.launch(spec.task_id)

    def _fetched(self, task_id: bytes, values: List[SerializedValue]) -> None:
        """Every large argument of a task arrived (fetched while it waited for resources)."""
        self.fetching.discard(task_id)
        entry = self.pending.get(task_id)
        if entry is None:
            return  # stolen back or dropped meanwhile
        self.pending[task_id] = (entry[0], values)
        if task_id in self.launch_when_fetched:
            self.launch_when_fetched.discard(task_id)
            self.launch(task_id)

    def was_cancelled(self, task_id: bytes) -> bool:
        """Whether a cancel reached this running task (get_runtime_context().is_canceled())."""
        return task_id in self.cancelled

    def on_cancel(self, task_id: bytes) -> None:
        """Drop a task that has not started; interrupt one that runs (KeyboardInterrupt in its
        thread, as Ray does, seen at its next Python instruction or get() poll)."""
        if task_id in self.pending:
            spec = self.pending.pop(task_id)[0]
            self.claims.pop(task_id, None)
            self.fetching.discard(task_id)
            self.launch_when_fetched.discard(task_id)
            if task_id not in self.ledger.running:
                self.ledger.finish(task_id)  # it was queued (a running one is released on TASK_DONE)
            if spec.kind == P.ACTOR_CREATE:
                self.host.forget_creation(task_id)
            self.post((P.TASK_DONE, task_id, None, cancelled_value(task_id), False))
            return
        with self._lock:  # against run() registering and _settle() unregistering the task
            if task_id in self.launched:  # handed to a pool thread that has not started it
                self.cancelled.add(task_id)
                return
            running = self.threads.get(task_id)
            if running is not None:
                self.cancelled.add(task_id)
                self._targeted.add(running[0])
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(running[0]),
                                                           ctypes.py_object(KeyboardInterrupt))
                return
        self.host.on_cancel(task_id)

    def on_steal(self, task_id: bytes) -> None:
        """The scheduler wants a queued task back; hand it over unless it already started."""
        if task_id in self.pending and task_id not in self.ledger.running:
            spec = self.pending.pop(task_id)[0]
            self.claims.pop(task_id, None)
            self.ledger.finish(task_id)
            if spec.kind == P.ACTOR_CREATE:
                self.host.forget_creation(task_id)
            self.post((P.STOLEN, task_id))

    def on_local(self, msg: tuple) -> bool:
        """Update the ledger (and actors) for a report of our own threads before it goes up."""
        kind, task_id = msg[0], msg[1]
        if kind == P.TASK_DONE:
            if self.host.created(task_id, failed=msg[3] is not None):
                return True
            if self.host.on_call_done(task_id) is not None:
                return True
            if task_id in self.ledger.running:
                self.release_claim(self._gpus_of.pop(task_id, None))
                started = self.ledger.finish(task_id)
            else:
                started = []
        elif kind == P.BLOCKED:
            started = self.ledger.block(task_id)
        else:
            self.ledger.unblock(task_id)
            started = []
        for tid in started:
            self.launch(tid)
        return True

    def reset(self) -> None:
        """Forget the session: queued tasks and actors are dropped, running ones finish unreported."""
        self.session += 1
        with self._lock:
            self.launched.clear()
            self.cancelled.clear()
        self.pending.clear()
        self.claims.clear()
        self.fetching.clear()
        self.launch_when_fetched.clear()
        self.blobs.clear()
        self.functions.clear()
        self.host.reset()
        self.ledger = RankLedger(self.ledger.total)
        self.gpu_use = {g: 0.0 for g in self.gpu_ids}
        self._gpus_of.clear()

    def launch(self, task_id: bytes) -> None:
        if task_id in self.fetching:  # it has its resources; it runs once its arguments are here
            self.launch_when_fetched.add(task_id)
            return
        claim = self.claims.pop(task_id, None) if self.claims else None
        if claim is not None and not self.board.claim(claim):
            # the scheduler took it back (this rank could not answer: claims.py) and placed it
            # elsewhere; it knows, so nothing is said
            self.pending.pop(task_id)
            for started in self.ledger.finish(task_id):
                self.launch(started)
            return
        spec, values = self.pending.pop(task_id)
        gpus = self._take_gpus(task_id, spec.demand.get("GPU", 0.0))
        session = self.session
        with self._lock:
            self.launched.add(task_id)
        own = self.host.own_threads(task_id) if spec.kind == P.ACTOR_CREATE else None
        if own is not None:  # a sync or threaded actor's __init__ runs on its own thread
            own.submit(lambda: self.run(spec, values, gpus, session))
        else:
            self.spawn(lambda: self.run(spec, values, gpus, session))

    def spawn(self, work: Callable[[], None]) -> None:
        """Run ``work`` on a pool thread; a new thread only when none is idle."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
                if self._lender is not None and not self._direct:
                    # the idle thread running the loop's turns takes it: no other thread is woken
                    self._direct.append(work)
                    return
        self._work.put(work)
        if spawn:
            thread = threading.Thread(target=self._thread_main, name=f"hpcray-exec-{len(self._threads)}",
                                      daemon=True)
            self._threads.append(thread)
            thread.start()

    def held(self) -> str:
        """What this rank runs now, for a message about its end: "tasks f, g; actors A" (any
        thread: a snapshot of the tables, never blocking)."""
        tasks = sorted({entry[2] for entry in list(self.threads.values())})
        actors = sorted({actor.class_name for actor in list(self.host.actors.values())})
        parts = ([f"tasks {', '.join(tasks)}"] if tasks else []) + ([f"actors {', '.join(actors)}"] if actors else [])
        return "; ".join(parts)

    def busy(self) -> bool:
        """Whether a thread is still running a task or call (the job is ending under it)."""
        with self._lock:
            if self._idle < len(self._threads):
                return True
        return self.host.busy()

    def _take_gpus(self, task_id: bytes, amount: float) -> List[str]:
        """Pick GPUs for a task. Fractional shares pack onto the fullest GPU that still has room
        (two 0.5-GPU tasks share one GPU); whole GPUs go to idle ones."""
        if amount <= 0 or not self.gpu_ids:
            return []
        count = max(1, int(-(-amount // 1)))
        share = amount / count
        room = [g for g in self.gpu_ids if self.gpu_use[g] + share <= 1.0 + 1e-9]
        room.sort(key=lambda g: -self.gpu_use[g])
        chosen = (room or sorted(self.gpu_ids, key=lambda g: self.gpu_use[g]))[:count]
        for g in chosen:
            self.gpu_use[g] += share
        self._gpus_of[task_id] = (chosen, share)
        return chosen

    def take_claim(self, task_id: bytes) -> Optional[tuple]:
        """Hand a task's GPU claim over (to the actor it created)."""
        return self._gpus_of.pop(task_id, None)

    def release_claim(self, claim: Optional[tuple]) -> None:
        if claim:
            gpus, share = claim
            for g in gpus:
                self.gpu_use[g] = max(0.0, self.gpu_use.get(g, 0.0) - share)

    # ---- pool threads -------------------------------------------------------------------
    def _thread_main(self) -> None:
        self._pool_idents.add(threading.get_ident())
        finished = False  # (the first work item is the one this thread was made for)
        while True:
            self.run_item(self._next_work(finished))
            finished = True

    def lends_turns(self, ident: int) -> None:
        """Thread ``ident`` (an actor's own) sends its reports in its own next lent turn, as a
        pool thread does (``report``)."""
        self._pool_idents.add(ident)

    def run_item(self, work: Callable[[], Optional[tuple]]) -> None:
        """Run one task or call on this thread (a pool thread, or an actor's own: actor_threads)
        and send its report; nothing it raises ends the thread."""
        report = None
        try:
            report = work()
        except KeyboardInterrupt:
            pass  # a cancel that landed outside the task's call (see _settle)
        except Exception:  # a bug outside any task's call: the thread lives on
            logger.exception("hpcray: a thread of rank %d that runs tasks failed", self.rank)
        interrupted = self._settle()
        if report is None and interrupted is not None and interrupted[1] == self.session:
            report = (P.TASK_DONE, interrupted[0], None, cancelled_value(interrupted[0]), False)
        if report is not None:
            self.report(report)

    def _settle(self) -> Optional[tuple]:
        """After a work item: unregister this thread's task and drop an interrupt (cancel) sent to
        it that has not landed yet, so none can land later in the loop's turns this thread runs.
        Returns (task, session) of a task that ended without reporting, else None."""
        if not self.threads and not self._targeted:
            # no task is registered (actor calls never are): nothing can have targeted this
            # thread, whose own task would be in ``threads`` until this very call removes it
            context.set_current(None)
            return None
        ident = threading.get_ident()
        found = None
        while True:
            try:
                with self._lock:
                    for task_id, running in self.threads.items():
                        if running[0] == ident:
                            found = (task_id, running[1])
                            break
                    if found is not None:
                        self.threads.pop(found[0], None)
                    if ident in self._targeted:
                        self._targeted.discard(ident)
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), None)
                context.set_current(None)
                return found
            except KeyboardInterrupt:
                continue  # it landed here, meant for the task that just ended

    def _next_work(self, finished: bool) -> Callable[[], None]:
        """The next task or call for this thread, which becomes idle here when it ``finished`` one.
        Meanwhile it runs the loop's turns itself (CommLoop.lend): its last result
        goes out and the next task comes in on this thread, with no hand-off to or from the comm
        thread. After ``guest_idle_s`` without progress it sleeps."""
        work = self._work
        loop = self.loop
        if not loop.lendable:
            if finished:
                with self._lock:
                    self._idle += 1
            return work.get()
        ident = threading.get_ident()
        while True:
            with self._lock:
                if finished:
                    self._idle += 1
                    finished = False
                lender = self._lender is None
                if lender:
                    self._lender = ident  # spawn() hands the next item to this thread
            if not lender:  # another idle thread runs the turns: wait for work the plain way
                if loop.commands:
                    loop.nudge()  # our report: the comm thread or that thread sends it
                return work.get()
            try:
                lent = loop.lend(self._has_work, None, loop.guest_idle_s, hold=self._has_work)
            finally:
                with self._lock:
                    self._lender = None
                    direct = self._direct.popleft() if self._direct else None
            if direct is not None:
                return direct
            try:
                return work.get_nowait()
            except queue.Empty:
                if not lent and loop.commands:
                    loop.nudge()  # our report was not sent by us: the comm thread or a guest sends it
                if not lent or work.empty():
                    return work.get()

    def _has_work(self) -> bool:
        return bool(self._direct) or not self._work.empty()

    def report(self, item: tuple) -> None:
        """A finished task's or call's report. A pool thread sends it in its next lent turn
        (``_next_work``), so the comm thread is not woken for it."""
        if self.loop.lendable and threading.get_ident() in self._pool_idents:
            self.loop.commands.append(item)
        else:
            self.post(item)

    def run(self, spec: TaskSpec, values: List[SerializedValue], gpus: List[str], session: int) -> Optional[tuple]:
        """Run a task on this pool thread; returns its TASK_DONE report (None: no longer wanted).
        A failure outside the task's own call (a bug here) fails the task, not the thread."""
        try:
            return self._run(spec, values, gpus, session)
        except Exception as exc:
            logger.exception("hpcray: rank %d failed to run %s", self.rank, spec.name)
            if session != self.session:
                return None
            return (P.TASK_DONE, spec.task_id, None, error_value(spec.name, exc, self.rank, self.ip), False)

    def _run(self, spec: TaskSpec, values: List[SerializedValue], gpus: List[str], session: int) -> Optional[tuple]:
        task_id = spec.task_id
        with self._lock:
            self.launched.discard(task_id)
            if task_id in self.cancelled:  # cancelled between launch and start
                self.cancelled.discard(task_id)
                return (P.TASK_DONE, task_id, None, cancelled_value(task_id), False) \
                    if session == self.session else None
            self.threads[task_id] = (threading.get_ident(), session, spec.name)
        env = task_environ(gpus, spec.env_vars)
        actor = self.host.creations.get(spec.task_id) if spec.kind == P.ACTOR_CREATE else None
        ctx = context.TaskContext(spec.task_id, spec.name, dict(spec.demand), env, self.rank, gpus,
                                  spec.actor_id, actor.handle if actor is not None else None, spec.strategy)
        if actor is not None:
            ctx.resources = dict(actor.resources)
        context.set_current(ctx)
        if spec.kind == P.ACTOR_CREATE:
            results, error, retryable = self.call_and_pickle(
                spec, lambda: self._constructor(self._function(spec), actor), values)
        else:
            results, error, retryable = self.call_and_pickle(spec, lambda: self._function(spec), values)
        if session != self.session:
            return None
        if error is None and spec.kind == P.TASK:
            with self._lock:
                cancelled = task_id in self.cancelled
                self.cancelled.discard(task_id)
            if cancelled:
                # cancelled while it ran, but its interrupt was lost: it can land inside a
                # __del__ the collector runs on this thread, which swallows it (seen in CI)
                return (P.TASK_DONE, task_id, None, cancelled_value(task_id), False)
        return (P.TASK_DONE, task_id, results, error, retryable)

    def _constructor(self, cls: Any, actor: Any) -> Callable:
        """The actor's ``__init__`` as a call. An async actor's runs on the actor's own event loop
        (as its methods do), so ``asyncio.get_event_loop()`` there is the actor's loop."""
        def construct(*args, **kwargs):
            if actor is not None and actor.is_async:
                async def on_the_loop():
                    return cls(*args, **kwargs)
                instance = self.host.run_on_loop(actor, on_the_loop())
            else:
                instance = cls(*args, **kwargs)
            if actor is not None:
                actor.instance = instance
            return None
        return construct

    def call_and_pickle(self, spec: TaskSpec, get_callable: Callable[[], Callable],
                        values: List[SerializedValue]):
        """Call the task or method; return (pickled returns, error, retryable)."""
        started = time.time()
        try:
            function = get_callable()
            call_args, call_kwargs = rebuild_arguments(spec.args, values, spec.deps)
            result = function(*call_args, **call_kwargs)
            if spec.num_returns < 0:
                result = self._generate(spec, result)
            return self._pickle_returns(spec, result), None, False
        except BaseException as exc:  # every failure becomes the task's error, never ours
            return self._failure(spec, exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            RECORDER.complete(spec.name, _CATEGORIES[spec.kind], started, (spec.task_id, spec.submitted, spec.owner))

    async def call_and_pickle_async(self, spec: TaskSpec, get_callable: Callable[[], Callable],
                                    values: List[SerializedValue]):
        started = time.time()
        try:
            function = get_callable()
            call_args, call_kwargs = rebuild_arguments(spec.args, values, spec.deps)
            result = function(*call_args, **call_kwargs)
            if inspect.isawaitable(result):
                result = await result
            if spec.num_returns < 0:
                if inspect.isasyncgen(result):
                    result = await self._generate_async(spec, result)
                else:
                    result = self._generate(spec, result)
            return self._pickle_returns(spec, result), None, False
        except BaseException as exc:  # every failure becomes the call's error, never the loop's
            return self._failure(spec, exc)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            RECORDER.complete(spec.name, _CATEGORIES[spec.kind], started, (spec.task_id, spec.submitted, spec.owner))

    def _failure(self, spec: TaskSpec, exc: BaseException):
        from .actor_host import ActorExit
        if spec.kind == P.ACTOR_METHOD and isinstance(exc, SystemExit):
            return None, exc if isinstance(exc, ActorExit) else ActorExit(), False
        if isinstance(exc, SystemExit):
            return None, serialize(exceptions.WorkerCrashedError(
                f"The task {spec.name} called exit({exc.code}) on rank {self.rank}; hpcray treats this "
                "as a crashed worker (the rank itself keeps running)"), is_error=True), True
        asyncio = sys.modules.get("asyncio")  # (a CancelledError exists only where it is imported)
        if (asyncio is not None and isinstance(exc, asyncio.CancelledError)) or (
                isinstance(exc, KeyboardInterrupt) and spec.task_id in self.cancelled):
            self.cancelled.discard(spec.task_id)
            return None, interrupted_value(spec, self.rank, self.ip), False
        retryable = RetryPolicy.matches(spec.retry_blob, exc) if isinstance(exc, Exception) else False
        return None, error_value(spec.name, exc, self.rank, self.ip), retryable

    def _function(self, spec: TaskSpec) -> Any:
        """The task's function (or actor class), unpickled once per session. A failure here is
        the task's error (it names the function), never the pool thread's."""
        function = self._load_function(spec)
        ctx = context.current()
        if ctx is not None and ctx.task_id == spec.task_id:
            name = context.qualified_name(function)
            ctx.function_name = name + ".__init__" if spec.kind == P.ACTOR_CREATE else name
        return function

    def _load_function(self, spec: TaskSpec) -> Any:
        fn_id = spec.fn_id
        function = self.functions.get(fn_id)
        if function is None:
            blob = self.blobs.get(fn_id)
            if blob is None:
                raise exceptions.RaySystemError(
                    f"The function of {spec.name} never reached rank {self.rank}")
            try:
                function = loads(blob)
            except Exception as exc:
                raise exceptions.RaySystemError(
                    f"Could not unpickle the function {spec.name} on rank {self.rank}: "
                    f"{type(exc).__name__}: {exc}", traceback.format_exc()) from None
            self.functions[fn_id] = function
        return function

    # ---- generator tasks (streams.py, generators.py) ------------------------------------------
    def _generate(self, spec: TaskSpec, result: Any) -> Any:
        """Run a generator task's generator: each item is streamed to the owner as it is made
        (STREAMING) or put (DYNAMIC). Returns the task's one return value: the item count, or
        the DynamicObjectRefGenerator of the items' refs."""
        if inspect.isasyncgen(result):  # an async generator in a sync task or threaded call
            import asyncio
            return asyncio.run(self._generate_async(spec, result))
        if not hasattr(result, "__next__"):
            raise TypeError(f"{spec.name} has num_returns={_returns_name(spec.num_returns)!r} but returned a "
                            f"{type(result).__name__}, not a generator: use yield, or a whole number "
                            "of returns")
        items = _Items(self, spec)
        try:
            for item in result:
                items.add(item)
                while items.ahead():
                    self._wait_consumed()
            return items.finish()
        finally:
            items.close()

    async def _generate_async(self, spec: TaskSpec, result: Any) -> Any:
        import asyncio
        items = _Items(self, spec)
        try:
            async for item in result:
                items.add(item)
                delay = 1e-4
                while items.ahead():  # (the actor's loop keeps running its other calls)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, WAKE_S)
            return items.finish()
        finally:
            items.close()

    def _wait_consumed(self) -> None:
        with self._consumed:
            self._consumed.wait(WAKE_S)  # (a cancel lands at the latest then)

    def _pickle_returns(self, spec: TaskSpec, result: Any) -> List[SerializedValue]:
        values = self._pickle_each(spec, result)
        contained = [object_id for value in values for object_id in value.contained]
        if contained:  # before the task's own refs can die: see Scheduler.on_pin
            self.post((P.PIN, contained))
        return values

    @staticmethod
    def _pickle_each(spec: TaskSpec, result: Any) -> List[SerializedValue]:
        count = spec.num_returns
        if count == 1 or count < 0:
            return [serialize(result, shared=True)]
        if count == 0:
            return []
        try:
            items = list(result)
        except TypeError:
            raise ValueError(f"Task {spec.name} has num_returns={count} but returned a "
                             f"{type(result).__name__}, not a sequence of {count} values") from None
        if len(items) != count:
            raise ValueError(f"Task {spec.name} has num_returns={count} but returned {len(items)} values")
        return [serialize(item, shared=True) for item in items]


def _returns_name(count: int) -> str:
    return {P.STREAMING: "streaming", P.DYNAMIC: "dynamic"}.get(count, str(count))


class _Items:
    """The items of one run of a generator task, on their way out."""

    __slots__ = ("executor", "spec", "count", "refs")

    def __init__(self, executor: Executor, spec: TaskSpec):
        self.executor = executor
        self.spec = spec
        self.count = 0
        self.refs: List[Any] = []  # DYNAMIC: the items' refs

    def add(self, item: Any) -> None:
        spec = self.spec
        if spec.num_returns == P.DYNAMIC:
            self.refs.append(object_ref.current.client.put(item))
            return
        value = try_serialize(item, f"item {self.count} of {spec.name}:", shared=True)
        if value.contained:  # before the generator's own refs can die: see Scheduler.on_pin
            self.executor.post((P.PIN, list(value.contained)))
        self.executor.post((P.STREAM_ITEM, spec.task_id, self.count, value))
        self.count += 1

    def ahead(self) -> bool:
        """Backpressure: whether the owner has not yet taken ``stream_limit`` of our items."""
        limit = self.spec.stream_limit
        if limit <= 0:
            return False
        return self.count - self.executor.stream_consumed.get(self.spec.task_id, 0) >= limit

    def finish(self) -> Any:
        if self.spec.num_returns == P.DYNAMIC:
            return DynamicObjectRefGenerator(self.refs)
        return self.count

    def close(self) -> None:
        executor = self.executor
        with executor._consumed:
            executor.stream_consumed.pop(self.spec.task_id, None)
