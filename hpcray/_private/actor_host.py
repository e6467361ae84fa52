"""The actors a rank hosts: each is an instance plus mailboxes, not a thread.

    ACTOR_CALL ─► mailbox[group] ─(group below its limit)─► the group's threads, or the event loop
                                                              │ TASK_DONE (via the comm thread)
                                   running -= 1, pump  ◄──────┘
    ACTOR_TERMINATE: calls already here finish, later ones fail, then the instance is dropped.
    ACTOR_KILL: queued and running calls fail at once; the instance is dropped.

A sync actor runs one call at a time (max_concurrency=1); a threaded actor up to
max_concurrency; both on threads of their own, one set per concurrency group, the default
group's running ``__init__`` too (actor_threads.py: thread-local state lasts, as on Ray). An
actor with any ``async def`` method runs its calls on one asyncio loop thread of its own (made on
first use), up to max_concurrency (default 1000) at once.
Concurrency groups have their own limits. Everything here runs in the loop's turns except
``run_call`` and ``run_async_call``.
"""

from __future__ import annotations

import enum
import concurrent.futures
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional

if TYPE_CHECKING:  # (imported for the first async actor: it is 30 ms of every worker's start)
    import asyncio

from .. import exceptions
from . import context
from . import protocol as P
from .config import WAKE_S
from .actor_directory import actor_key
from .actor_threads import ThreadSet
from .executor import cancelled_value, task_environ
from .object_plane import resolve_all
from .serialization import SerializedValue, serialize

DEFAULT_GROUP = "_default"


class Hosted(enum.Enum):
    """An actor's life on its rank: CREATING (``__init__`` queued or running) → ALIVE →
    EXIT_REQUESTED (``exit_actor()`` in a call that has not returned yet) → DEAD; CREATING → DEAD
    when ``__init__`` fails or the actor is killed first."""
    CREATING = 1
    ALIVE = 2
    EXIT_REQUESTED = 3
    DEAD = 4


class ActorExit(SystemExit):
    """Raised by ``exit_actor()``: ends the actor after the current call."""


class HostedActor:
    __slots__ = ("actor_id", "spec", "instance", "state", "mailboxes", "limits", "running",
                 "loop", "is_async", "resources", "gpus", "inflight", "terminating", "class_name",
                 "handle", "gpu_claim", "threads")

    def __init__(self, spec: P.TaskSpec):
        options = spec.actor_options
        self.actor_id = spec.actor_id
        self.spec = spec
        self.instance: Any = None
        self.state = Hosted.CREATING
        self.is_async: bool = options.is_async
        default_limit = options.max_concurrency or (1000 if self.is_async else 1)
        self.limits: Dict[str, int] = {DEFAULT_GROUP: default_limit}
        self.limits.update(options.groups)
        self.mailboxes: Dict[str, Deque] = {}
        self.running: Dict[str, int] = {}
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.resources: Dict[str, float] = options.lifetime
        self.gpus: List[str] = []
        self.inflight: Dict[bytes, P.TaskSpec] = {}
        self.terminating = False
        self.class_name: str = options.class_name
        self.handle: Optional[tuple] = None  # (actor id, meta blob, handle object id)
        self.gpu_claim: Optional[tuple] = None
        self.threads: Dict[str, ThreadSet] = {}  # group -> its own threads (not for async actors)


class ActorHost:
    """Actors of one rank. Owned by the Executor, driven by the comm thread."""

    def __init__(self, executor: Any):
        self.executor = executor
        self.actors: Dict[bytes, HostedActor] = {}
        self.creations: Dict[bytes, HostedActor] = {}  # creation task id -> actor
        self.calls: Dict[bytes, HostedActor] = {}  # running call's task id -> actor
        self.futures: Dict[bytes, Any] = {}  # running async call -> its concurrent future
        self.coroutines_begun: set = set()  # async calls whose coroutine started (they report)
        self._loops_lock = threading.Lock()
        self.thread_sets: set = set()  # of live actors, and of gone ones still running a call

    def own_threads(self, creation_id: bytes) -> Optional[ThreadSet]:
        """The threads a sync or threaded actor's ``__init__`` runs on (those of its default
        group); None for an async actor or a creation that is not ours."""
        actor = self.creations.get(creation_id)
        if actor is None or actor.is_async:
            return None
        return self._threads_of(actor, DEFAULT_GROUP)

    def busy(self) -> bool:
        """Whether an actor's own thread is running a call (the job is ending under it)."""
        idle_and_closed = [threads for threads in list(self.thread_sets) if threads.closed and not threads.busy()]
        self.thread_sets.difference_update(idle_and_closed)
        return any(threads.busy() for threads in list(self.thread_sets))

    def _threads_of(self, actor: HostedActor, group: str) -> ThreadSet:
        threads = actor.threads.get(group)
        if threads is None:
            name = f"hpcray-actor-{actor.class_name}" + ("" if group == DEFAULT_GROUP else f"-{group}")
            threads = actor.threads[group] = ThreadSet(self.executor, name, actor.limits.get(group, 1))
            self.thread_sets.add(threads)
        return threads

    def _close_threads(self, actor: HostedActor) -> None:
        # Only this actor's sets are looked at: ending each of 10,000 actors must not walk them
        # all. A set still running a call (its actor killed under it) stays for busy() to see;
        # busy() drops it once idle.
        for threads in actor.threads.values():
            threads.close()
            if not threads.busy():
                self.thread_sets.discard(threads)
        actor.threads = {}

    # ---- comm thread ----------------------------------------------------------------------
    def register(self, spec: P.TaskSpec) -> None:
        actor = HostedActor(spec)
        # what current_actor needs to build a handle on demand (a handle held by the actor
        # itself would keep it alive)
        actor.handle = (spec.actor_id, spec.actor_options.meta_blob, spec.return_ids[0])
        self.actors[spec.actor_id] = actor
        self.creations[spec.task_id] = actor

    def created(self, task_id: bytes, failed: bool) -> bool:
        """The creation task ended; True when it was one of ours."""
        actor = self.creations.pop(task_id, None)
        if actor is None:
            return False
        ledger = self.executor.ledger
        claim = self.executor.take_claim(task_id)
        if actor.state == Hosted.CREATING and not failed:
            actor.state = Hosted.ALIVE
            actor.gpu_claim = claim
            actor.gpus = list(claim[0]) if claim else []
            started = ledger.transfer(task_id, actor_key(actor.actor_id), actor.resources)
        else:
            self.executor.release_claim(claim)
            started = ledger.finish(task_id)
            if actor.state == Hosted.CREATING:
                actor.state = Hosted.DEAD
                self._drop(actor, release=False)
        for tid in started:
            self.executor.launch(tid)
        self._pump(actor)
        return True

    def forget_creation(self, task_id: bytes) -> None:
        actor = self.creations.pop(task_id, None)
        if actor is not None:
            self.actors.pop(actor.actor_id, None)

    def on_call(self, spec: P.TaskSpec, values: List[SerializedValue]) -> None:
        actor = self.actors.get(spec.actor_id)
        if actor is None or actor.state == Hosted.DEAD or actor.terminating:
            self._fail(spec, "The actor is dead or exiting; this call was not run")
            return
        group = spec.group or DEFAULT_GROUP
        if group not in actor.limits:
            group = DEFAULT_GROUP
        box = actor.mailboxes.get(group)
        if box is None:
            box = actor.mailboxes[group] = deque()
        entry = [spec, values, True]  # spec, argument values, ready to run
        box.append(entry)
        plane = self.executor.plane
        if values and plane is not None and any(v.location is not None for v in values):
            entry[2] = False  # large arguments are fetched first; later calls wait behind it

            def fetched(real: List[SerializedValue]) -> None:
                entry[1] = real
                entry[2] = True
                self._pump(actor)
            resolve_all(plane, spec.deps, values, fetched)
        self._pump(actor)

    def on_call_done(self, task_id: bytes) -> Optional[bool]:
        """A call of ours ended: None if the task id is not an actor call, else whether to report."""
        actor = self.calls.pop(task_id, None)
        self.futures.pop(task_id, None)
        if actor is None:
            return None
        spec = actor.inflight.pop(task_id, None)
        if spec is None:  # failed already (kill): this is the late real result
            return True
        group = spec.group or DEFAULT_GROUP
        if group not in actor.limits:
            group = DEFAULT_GROUP
        actor.running[group] -= 1
        if actor.state == Hosted.EXIT_REQUESTED:
            self._exit(actor, "The actor exited by calling exit_actor()")
        else:
            self._pump(actor)
        return True

    def on_kill(self, actor_id: bytes, death: SerializedValue) -> None:
        actor = self.actors.get(actor_id)
        if actor is None:
            return
        for box in actor.mailboxes.values():
            for entry in box:
                self._post_error(entry[0], death)
        for spec in actor.inflight.values():
            self._post_error(spec, death)
        actor.mailboxes.clear()
        actor.inflight.clear()
        was_alive = actor.state == Hosted.ALIVE
        actor.state = Hosted.DEAD
        self._drop(actor, release=was_alive)

    def on_cancel(self, task_id: bytes) -> None:
        """A queued call is dropped; a running async call is cancelled; a running sync call is
        left to finish (as in Ray: poll is_canceled() is not offered yet)."""
        future = self.futures.get(task_id)
        if future is not None:
            future.cancel()
            return
        for actor in self.actors.values():
            for box in actor.mailboxes.values():
                for entry in box:
                    if entry[0].task_id == task_id:
                        box.remove(entry)
                        self._post_error(entry[0], cancelled_value(task_id))
                        return

    def on_terminate(self, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == Hosted.DEAD:
            return
        actor.terminating = True
        self._pump(actor)

    def request_exit(self, actor_id: bytes) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None and actor.state == Hosted.ALIVE:
            actor.state = Hosted.EXIT_REQUESTED

    def reset(self) -> None:
        for actor in self.actors.values():
            self._stop_loop(actor)
            self._close_threads(actor)
        self.actors.clear()
        self.creations.clear()
        self.calls.clear()

    def _pump(self, actor: HostedActor) -> None:
        if actor.state != Hosted.ALIVE:
            return
        for group, box in actor.mailboxes.items():
            limit = actor.limits.get(group, 1)
            while box and box[0][2] and actor.running.get(group, 0) < limit:
                spec, values, _ = box.popleft()
                actor.running[group] = actor.running.get(group, 0) + 1
                actor.inflight[spec.task_id] = spec
                self.calls[spec.task_id] = actor
                self._start(actor, group, spec, values)
        if actor.terminating and not actor.inflight and not any(actor.mailboxes.values()):
            self._exit(actor, f"The actor {actor.class_name} exited: no handle to it is left, or "
                              "__ray_terminate__ was called")

    def _start(self, actor: HostedActor, group: str, spec: P.TaskSpec, values: List[SerializedValue]) -> None:
        if actor.is_async:
            import asyncio
            loop = self._loop_of(actor)
            future = asyncio.run_coroutine_threadsafe(self.run_async_call(actor, spec, values), loop)
            self.futures[spec.task_id] = future

            def cancelled_before_start(done, task_id=spec.task_id) -> None:
                # cancelled before the coroutine ran: report it here (one that ran reports its
                # own end: interrupted, as Ray's RayTaskError(TaskCancelledError))
                if done.cancelled() and task_id not in self.coroutines_begun:
                    self.executor.post((P.TASK_DONE, task_id, None, cancelled_value(task_id), False))
                self.coroutines_begun.discard(task_id)
            future.add_done_callback(cancelled_before_start)
        else:
            self._threads_of(actor, group).submit(lambda: self.run_call(actor, spec, values))

    def _exit(self, actor: HostedActor, message: str) -> None:
        reason = serialize(exceptions.ActorDiedError(actor_id=actor.actor_id.hex(), error_msg=message),
                           is_error=True)
        for box in actor.mailboxes.values():
            for entry in box:
                self._post_error(entry[0], reason)
        actor.mailboxes.clear()
        actor.state = Hosted.DEAD
        self._drop(actor, release=True)
        self.executor.post((P.ACTOR_EXITED, actor.actor_id, reason))

    def _drop(self, actor: HostedActor, release: bool) -> None:
        self.actors.pop(actor.actor_id, None)
        self._stop_loop(actor)
        self._close_threads(actor)
        actor.instance = None
        if release:
            for tid in self.executor.ledger.finish(actor_key(actor.actor_id)):
                self.executor.launch(tid)
            self.executor.release_claim(actor.gpu_claim)
            actor.gpu_claim = None

    def _loop_of(self, actor: HostedActor) -> asyncio.AbstractEventLoop:
        with self._loops_lock:  # (the actor's __init__ asks for it from a pool thread)
            if actor.loop is None:
                import asyncio
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=_serve_loop, args=(loop,), name=f"hpcray-actor-{actor.class_name}",
                                          daemon=True)
                thread.start()
                actor.loop = loop
            return actor.loop

    def run_on_loop(self, actor: HostedActor, coroutine: Any) -> Any:
        """Pool thread: run ``coroutine`` on the actor's event loop and return its result; an
        actor killed meanwhile (its loop stopped) raises instead of leaving the thread waiting."""
        import asyncio
        loop = self._loop_of(actor)
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        while True:
            try:
                return future.result(WAKE_S)
            except concurrent.futures.TimeoutError:
                if actor.loop is not loop:
                    future.cancel()
                    raise exceptions.ActorDiedError(actor_id=actor.actor_id.hex(), error_msg=(
                        f"The actor {actor.class_name} was killed while its __init__ ran")) from None

    @staticmethod
    def _stop_loop(actor: HostedActor) -> None:
        """The actor ended: its loop stops (``_serve_loop`` then closes it, on its own thread)."""
        if actor.loop is not None:
            actor.loop.call_soon_threadsafe(actor.loop.stop)
            actor.loop = None

    def _fail(self, spec: P.TaskSpec, message: str) -> None:
        self._post_error(spec, serialize(exceptions.ActorDiedError(
            actor_id=spec.actor_id.hex(), error_msg=message), is_error=True))

    def _post_error(self, spec: P.TaskSpec, error: SerializedValue) -> None:
        self.executor.post((P.TASK_DONE, spec.task_id, None, error, False))

    # ---- pool threads / the actor's loop ----------------------------------------------------
    def _context(self, actor: HostedActor, spec: P.TaskSpec) -> context.TaskContext:
        env = task_environ(actor.gpus)
        # (the actor's resources are shared: get_assigned_resources() hands out a copy)
        ctx = context.TaskContext(spec.task_id, spec.name, actor.resources, env,
                                  self.executor.rank, actor.gpus, actor.actor_id, actor.handle,
                                  actor.spec.strategy)
        if actor.instance is not None:
            ctx.function_name = f"{context.qualified_name(type(actor.instance))}.{spec.method}"
        return ctx

    def run_call(self, actor: HostedActor, spec: P.TaskSpec, values: List[SerializedValue]) -> None:
        """On one of the actor's threads (Executor.run_item, whose _settle() clears the context
        afterwards)."""
        context.set_current(self._context(actor, spec))
        results, error, retryable = self.executor.call_and_pickle(
            spec, lambda: self._bound_method(actor, spec), values)
        self._report(actor, spec, results, error, retryable)

    async def run_async_call(self, actor: HostedActor, spec: P.TaskSpec, values: List[SerializedValue]) -> None:
        self.coroutines_begun.add(spec.task_id)
        context.set_current(self._context(actor, spec))
        results, error, retryable = await self.executor.call_and_pickle_async(
            spec, lambda: self._bound_method(actor, spec), values)
        self._report(actor, spec, results, error, retryable)

    def _report(self, actor, spec, results, error, retryable) -> None:
        if isinstance(error, ActorExit):
            self.executor.post((P.CALL, lambda: self.request_exit(actor.actor_id)))
            error = serialize(exceptions.ActorDiedError(
                actor_id=actor.actor_id.hex(), error_msg=f"The actor {actor.class_name} exited by "
                                                         "calling exit_actor()"), is_error=True)
        self.executor.report((P.TASK_DONE, spec.task_id, results, error, retryable))

    @staticmethod
    def _bound_method(actor: HostedActor, spec: P.TaskSpec) -> Callable:
        instance = actor.instance
        if spec.method == "__ray_terminate__":
            raise ActorExit()
        if spec.method == "__ray_ready__":
            return lambda: True
        return getattr(instance, spec.method)


def _serve_loop(loop: asyncio.AbstractEventLoop) -> None:
    """An async actor's loop thread: run the loop until the actor ends, then cancel what is left
    on it (calls of a killed actor, failed for their callers already) and close it here. A loop
    left to the garbage collector unclosed closes itself in ``__del__`` on whatever thread that
    is, after its self-pipe socket may have been collected first ("Invalid file descriptor")."""
    import asyncio
    try:
        loop.run_forever()
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:  # one more turn, so each cancelled coroutine sees its CancelledError
                loop.run_until_complete(asyncio.wait(left, timeout=1.0))
            loop.close()
        except BaseException:  # (a coroutine that will not end): the thread ends all the same
            pass
