"""The scheduler's half of actors: where each actor lives, its callers' queues, names, death.

    ACTOR_CREATE spec ─► placed like a task ─► rank r runs __init__ ─► TASK_DONE ─► ALIVE
                                   │ (rank known at once)                          │
    ACTOR_METHOD spec ─► callers[caller] FIFO ─(head's deps ready)─► ACTOR_CALL to r ─┘
    handle object freed (no handle left) ─► ACTOR_TERMINATE ─► ACTOR_EXITED ─► DEAD
    KILL ─► ACTOR_KILL to r, queued calls fail ─► DEAD

Calls from one caller (the driver, or one task or actor call: ``caller_of``) stay in submission
order: only the head of a caller's queue may be forwarded, and only once its top-level arguments
are ready; calls of other callers, on the same rank too, do not wait behind it (as on Ray). Used
as a mixin of Scheduler.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Deque, Dict, List, Optional, Tuple

from .. import exceptions
from . import protocol as P
from .placement import InGroup
from .serialization import SerializedValue, serialize


class Life(enum.Enum):
    """An actor as the scheduler sees it: PENDING (created, ``__init__`` not yet done) → ALIVE →
    DEAD (killed, exited, its rank gone, or its last handle dropped); PENDING → DEAD when
    ``__init__`` fails."""
    PENDING = 1
    ALIVE = 2
    DEAD = 3


PENDING, ALIVE, DEAD = Life.PENDING, Life.ALIVE, Life.DEAD


def actor_key(actor_id: bytes) -> bytes:
    """The ledger key under which a living actor holds its resources."""
    return b"A" + actor_id


class ActorRecord:
    __slots__ = ("actor_id", "handle_id", "rank", "state", "death", "name", "namespace", "detached",
                 "lifetime", "callers", "class_name", "meta_blob", "inflight", "group", "max_restarts",
                 "restarts_left", "restarts", "creation", "pins")

    def __init__(self, spec: P.TaskSpec):
        options = spec.actor_options
        self.actor_id = spec.actor_id
        self.handle_id = spec.return_ids[0]
        self.rank: Optional[int] = None
        self.state = PENDING
        self.death: Optional[SerializedValue] = None
        self.name: Optional[str] = options.name
        self.namespace: str = options.namespace
        self.detached: bool = options.detached
        self.lifetime: Dict[str, float] = options.lifetime
        self.class_name: str = options.class_name
        self.meta_blob: bytes = options.meta_blob
        self.callers: Dict[tuple, Deque] = {}  # caller_of(spec) -> its calls, in order
        self.inflight: set = set()
        self.group = spec.strategy.group_id if type(spec.strategy) is InGroup else None
        self.max_restarts = spec.max_retries  # (a creation's max_retries is max_restarts)
        self.restarts_left = spec.max_retries  # -1: no limit
        self.restarts = 0  # instances started after the first
        # a restartable actor's creation and the arguments it keeps pinned for new instances
        self.creation: Optional[P.TaskSpec] = None
        self.pins: List[bytes] = []


def caller_of(spec: P.TaskSpec) -> tuple:
    """Who made an actor call, for its ordering: the rank and the task (None: the driver's or a
    rank's own code outside tasks)."""
    return spec.owner, spec.parent


def death_value(actor: ActorRecord, message: str, init_failed: bool = False) -> SerializedValue:
    return serialize(exceptions.ActorDiedError(
        actor_id=actor.actor_id.hex(), error_msg=message, actor_init_failed=init_failed), is_error=True)


class ActorDirectory:
    """Mixin for Scheduler: needs self.send, self.objects, self.tasks, self.ranks, self._finish,
    self._make_ready, self._set_value."""

    def _init_actors(self) -> None:
        self.actors: Dict[bytes, ActorRecord] = {}
        self.actor_by_handle: Dict[bytes, ActorRecord] = {}
        self.names: Dict[Tuple[str, str], ActorRecord] = {}

    # ---- creation -------------------------------------------------------------------------
    def submit_actor_creation(self, src: int, record) -> bool:
        """Register a new actor; False when the spec was answered without creating one."""
        spec = record.spec
        options = spec.actor_options
        reply = options.reply
        name = options.name
        if name is not None:
            key = (options.namespace, name)
            existing = self.names.get(key)
            if existing is not None and existing.state != DEAD and existing.handle_id in self.objects:
                if options.get_if_exists:
                    self._hold_for(existing)
                    self.send(src, (P.OBJECT, reply, serialize(("exists", existing.actor_id, existing.handle_id))))
                else:
                    self.send(src, (P.OBJECT, reply, serialize(ValueError(
                        f"The name {name!r} (namespace={key[0]!r}) is already taken by another actor"),
                        is_error=True)))
                return False
        actor = ActorRecord(spec)
        if actor.detached:  # the actor itself holds its handle object until it dies
            self.objects[actor.handle_id].refs += 1
        self.actors[actor.actor_id] = actor
        self.actor_by_handle[actor.handle_id] = actor
        if name is not None:
            self.names[(actor.namespace, name)] = actor
        if reply is not None:
            self.send(src, (P.OBJECT, reply, serialize(("created", actor.actor_id, actor.handle_id))))
        return True

    def actor_placed(self, spec: P.TaskSpec, rank: int) -> None:
        actor = self.actors.get(spec.actor_id)
        if actor is not None:
            actor.rank = rank
            for caller in list(actor.callers):
                self._forward_calls(actor, caller)

    def actor_created(self, src: int, record, error: Optional[SerializedValue]) -> None:
        spec = record.spec
        actor = self.actors.get(spec.actor_id)
        state = self.ranks.get(src)
        if actor is None or src != record.rank:
            return  # (a report of an instance killed to be restarted)
        if error is None:
            if actor.restarts_left != 0 and actor.creation is None:
                actor.creation = spec  # kept for new instances, with its arguments
                actor.pins, record.pins = list(record.pins), ()
            if actor.state == PENDING:
                actor.state = ALIVE
                if state is not None:
                    state.ledger.transfer(spec.task_id, actor_key(actor.actor_id), actor.lifetime)
            elif state is not None:
                state.ledger.finish(spec.task_id)
        else:
            if state is not None:
                state.ledger.finish(spec.task_id)
            from .serialization import deserialize
            cause = deserialize(error)
            self._actor_died(actor, death_value(
                actor, f"The actor {actor.class_name} died because its __init__ raised:\n{cause}",
                init_failed=True))
        self.dirty = True
        self._finish(record, None, [serialize(None)])

    # ---- calls ----------------------------------------------------------------------------
    def submit_actor_call(self, src: int, record) -> None:
        spec = record.spec
        actor = self.actors.get(spec.actor_id)
        if actor is None or actor.state == DEAD:
            death = actor.death if actor is not None else serialize(exceptions.ActorDiedError(
                error_msg="The actor is dead or was never created in this session"), is_error=True)
            self._finish(record, death)
            return
        entry = self.objects.get(actor.handle_id)
        if entry is not None:
            entry.refs += 1
            if record.pins:
                record.pins.append(actor.handle_id)
            else:
                record.pins = [actor.handle_id]
        caller = caller_of(spec)
        queue = actor.callers.get(caller)
        if queue is None:
            queue = actor.callers[caller] = deque()
        queue.append(record)
        self._forward_calls(actor, caller)

    def _forward_calls(self, actor: ActorRecord, caller: tuple) -> None:
        queue = actor.callers.get(caller)
        if not queue or actor.rank is None:
            return
        while queue:
            record = queue[0]
            if record.finished:
                queue.popleft()
                continue
            if record.missing:
                break
            queue.popleft()
            self._send_call(actor, record)

    def _send_call(self, actor: ActorRecord, record) -> None:
        spec = record.spec
        record.rank = actor.rank
        actor.inflight.add(spec.task_id)
        values = [self.objects[d].value for d in spec.deps]
        self.send(actor.rank, (P.ACTOR_CALL, spec, values))

    def call_dependencies_ready(self, record) -> None:
        actor = self.actors.get(record.spec.actor_id)
        if actor is not None:
            self._forward_calls(actor, caller_of(record.spec))

    def actor_call_done(self, src: int, record, error: Optional[SerializedValue], retryable: bool, values) -> None:
        actor = self.actors.get(record.spec.actor_id)
        if src != record.rank:
            return  # a call sent to an instance killed to be restarted: it is sent again
        if actor is not None:
            actor.inflight.discard(record.spec.task_id)
        if error is not None and actor is not None and actor.state != DEAD and record.take_retry(retryable):
            self._send_call(actor, record)
            return
        self._finish(record, error, values)

    # ---- names ----------------------------------------------------------------------------
    def on_get_actor(self, src: int, name: str, namespace: str, reply: bytes) -> None:
        actor = self.names.get((namespace, name))
        if actor is None or actor.state == DEAD or actor.handle_id not in self.objects:
            value = serialize(ValueError(f"Failed to look up actor with name {name!r} in namespace "
                                         f"{namespace!r}. This could because 1. You are trying to look "
                                         "up a named actor you didn't create. 2. The named actor died. "
                                         "3. You did not use a namespace matching the namespace of "
                                         "the actor."), is_error=True)
        else:
            self._hold_for(actor)
            value = serialize((actor.actor_id, actor.handle_id, actor.meta_blob))
        self.send(src, (P.OBJECT, reply, value))

    def _hold_for(self, actor: ActorRecord) -> None:
        """Count the handle we are about to send; the receiver ADOPTs it (no race with frees)."""
        entry = self.objects.get(actor.handle_id)
        if entry is not None:
            entry.refs += 1

    def named_actors_view(self) -> List[Tuple[str, str]]:
        return [(ns, name) for (ns, name), actor in self.names.items() if actor.state != DEAD]

    # ---- ends -----------------------------------------------------------------------------
    def on_kill(self, src: int, actor_id: bytes, no_restart: bool) -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == DEAD:
            return
        if not no_restart and actor.restarts_left != 0:
            self.kill_and_restart(actor)
            return
        death = death_value(actor, f"The actor {actor.class_name} was killed by `hpcray.kill()` "
                                   "(`ray.kill`).")
        rank = actor.rank
        was_placed = actor.state == ALIVE
        self._actor_died(actor, death)
        if rank is not None:
            self.send(rank, (P.ACTOR_KILL, actor_id, death))
            state = self.ranks.get(rank)
            if state is not None and was_placed:
                state.ledger.finish(actor_key(actor_id))
                self.dirty = True

    def on_actor_exited(self, src: int, actor_id: bytes, reason: SerializedValue) -> None:
        actor = self.actors.get(actor_id)
        state = self.ranks.get(src)
        if state is not None:
            state.ledger.finish(actor_key(actor_id))
            self.dirty = True
        if actor is not None and actor.state != DEAD:
            self._actor_died(actor, reason)

    def handle_released(self, actor: ActorRecord) -> None:
        """No handle to the actor is left anywhere: it ends once its submitted calls are done."""
        self.actor_by_handle.pop(actor.handle_id, None)
        if actor.detached or actor.state == DEAD:
            if actor.state == DEAD:
                self.actors.pop(actor.actor_id, None)
            return
        self._unname(actor)  # it is ending: the name is free for a new actor at once
        if actor.rank is not None:
            self.send(actor.rank, (P.ACTOR_TERMINATE, actor.actor_id))

    def _unname(self, actor: ActorRecord) -> None:
        if actor.name is not None and self.names.get((actor.namespace, actor.name)) is actor:
            del self.names[(actor.namespace, actor.name)]

    def _actor_died(self, actor: ActorRecord, death: SerializedValue) -> None:
        actor.state = DEAD
        actor.death = death
        self._unname(actor)
        for object_id in actor.pins:
            self._unpin(object_id)
        actor.pins = []
        actor.creation = None
        if actor.detached:
            actor.detached = False
            self._unpin(actor.handle_id)
        for queue in actor.callers.values():
            for record in queue:
                if not record.finished:
                    self._finish(record, death)
        actor.callers.clear()
        for task_id in list(actor.inflight):
            record = self.tasks.get(task_id)
            if record is not None and not record.finished:
                self._finish(record, death)
        actor.inflight.clear()
        if actor.handle_id not in self.actor_by_handle:
            self.actors.pop(actor.actor_id, None)
