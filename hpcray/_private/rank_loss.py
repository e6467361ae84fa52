"""The scheduler's side of a worker rank's death (Open MPI with ULFM; any other MPI ends the job).

    transport: an MPI call fails ─► Get_failed / Ack_failed ─► CommLoop ─► on_ranks_dead(ranks)
        the rank's RankState goes            ─► cluster_resources(), nodes() show the loss
        its tasks (queued or running)        ─► placed again (a crash uses one of max_retries,
                                                whatever retry_exceptions says) or WorkerCrashedError
        its actors                           ─► a new instance elsewhere (max_restarts): __init__
                                                again with the original arguments, same handle and
                                                name; calls in flight fail (ActorDiedError) unless
                                                max_task_retries allows another try; later calls
                                                wait for the new instance. No restart left:
                                                ActorDiedError for every call
        values only it held (private memory) ─► made again by running their task once more where
                                                its lineage is kept (Ray's lineage reconstruction:
                                                a task with retries left, its arguments held);
                                                else ObjectLostError (a value in its arena
                                                segment is still mapped by the ranks of its host).
                                                A rank that meets the dead holder asks again
                                                (REFETCH) and gets the new value or the error
        placement-group bundles there        ─► placed again where they fit (their tasks wait)
        reports asked of it                  ─► answered without it

``kill(actor, no_restart=False)`` restarts an actor the same way (its calls in flight fail). Mixin
of Scheduler.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from typing import Any, Callable, Dict, List, Tuple

from .. import exceptions
from . import protocol as P
from .actor_directory import ALIVE, DEAD, PENDING, ActorRecord, actor_key, caller_of, death_value
from .protocol import RankInfo
from .serialization import SerializedValue

logger = logging.getLogger("hpcray")


class Lineage:
    """A finished task kept so that its returns can be made again if the rank holding them dies
    (only where the job survives that: ``Scheduler.keeps_lineage``). It holds the task's
    arguments (their entries' counts) until the last of its returns is freed."""

    __slots__ = ("spec", "retries_left", "alive", "held")

    def __init__(self, spec: P.TaskSpec, retries_left: int, alive: int, held: List[bytes]):
        self.spec = spec
        self.retries_left = retries_left  # runs left to make the values again (-1: no limit)
        self.alive = alive  # its returns still in the object table
        self.held = held  # the arguments it holds


class RankLoss:
    """Mixin for Scheduler: needs self.ranks, self.order, self.by_node, self.tasks, self.objects,
    self.actors, self.groups, self.reports and the scheduler's placement and completion methods."""

    def _init_rank_loss(self) -> None:
        self.dead_ranks: Dict[int, RankInfo] = {}
        self.keeps_lineage = False  # the job survives dead ranks: keep what can rebuild values
        # REFETCHes that name a rank not yet known dead: dead rank -> [(requester, object id)]
        self.refetches: Dict[int, List[Tuple[int, bytes]]] = {}
        # job rank -> how many new processes took that number after its process died
        self.generations: Dict[int, int] = {}
        # a new process joined under a dead rank's number (runtime: WELCOME it, note its pid)
        self.on_rank_back: Callable[[RankInfo], None] = lambda info: None

    def on_ranks_dead(self, ranks: List[int]) -> None:
        """Worker ranks died: go on with the others (see the module's diagram)."""
        for rank in ranks:
            state = self.ranks.pop(rank, None)
            if state is None:
                continue
            self.dead_ranks[rank] = state.info
            self.order.remove(state)
            if self.room is not None:
                self.room.remove(state)
            peers = self.by_node.get(state.node_id, [])
            if state in peers:
                peers.remove(state)
            if not peers:
                self.by_node.pop(state.node_id, None)
            where = f"rank {rank} (pid {state.info.pid} on {state.info.host})"
            work = self.work_on_rank(rank)
            logger.error("hpcray: %s died%s; the job goes on with %d rank(s)", where,
                         f" (it held {work})" if work else "", len(self.ranks))
            rebuilds = self._objects_lost_with(rank, where)
            self._bundles_lost_with(rank)
            self._tasks_lost_with(rank, where)
            self._actors_lost_with(rank, where)
            self._rebuild(rebuilds, where)
            self._reports_without(rank)
            for src, object_id in self.refetches.pop(rank, ()):
                self.on_refetch(src, object_id, rank)
        self.dirty = True

    # ---- lineage ------------------------------------------------------------------------
    def keep_lineage(self, record: Any, values: List[SerializedValue]) -> None:
        """A task finished: keep it if one of its returns lives only in a worker rank's private
        memory and it could run again (its retries left, as Ray counts them)."""
        spec = record.spec
        if spec.num_returns < 0 or record.retries_left == 0:
            return
        for value in values:
            if value.location is not None and value.placement is None:
                break
        else:
            return
        held = []
        for object_id in list(spec.deps) + list(spec.args.contained):
            entry = self.objects.get(object_id)
            if entry is not None:
                entry.refs += 1
                held.append(object_id)
        returns = [self.objects[r] for r in spec.return_ids if r in self.objects]
        lineage = Lineage(spec, record.retries_left, len(returns), held)
        for entry in returns:
            entry.lineage = lineage

    def lineage_released(self, lineage: Lineage) -> None:
        """One of the task's returns was freed; with the last, its arguments go."""
        lineage.alive -= 1
        if lineage.alive == 0:
            for object_id in lineage.held:
                self._unpin(object_id)
            lineage.held = []

    def on_refetch(self, src: int, object_id: bytes, dead: int, generation: int = 0) -> None:
        """A rank met the dead holder of a value (the process ``generation`` at that number):
        answer with the value (made again) or the error once this scheduler has gone on without
        that process."""
        if dead in self.ranks and generation >= self.generations.get(dead, 0):
            # not known dead here yet: answered by on_ranks_dead
            self.refetches.setdefault(dead, []).append((src, object_id))
            return
        entry = self.objects.get(object_id)
        if entry is not None and entry.value is not None and entry.value.location == dead:
            # in the dead rank's arena segment, which the asking rank (another host) cannot map
            self.send(src, (P.OBJECT, object_id, self._error_value(exceptions.ObjectLostError(
                object_id.hex(), message=f"Object {object_id.hex()} is lost: rank {dead}, which held it, "
                                         "died, and its host's memory cannot be read from here"))))
            return
        self.on_get_request(src, [object_id])

    def on_hello(self, src: int, info: RankInfo) -> None:
        """A new process took the number of the dead rank ``src`` (replacement.py): it gets the
        dead rank's resources and GPUs and takes tasks and actors like any rank."""
        state = self.ranks.get(src)
        if state is not None:  # (welcomed by a later session already: only its process is new)
            state.info.pid, state.info.host = info.pid, info.host
            return
        old = self.dead_ranks.pop(src, None)
        if old is None:
            logger.warning("hpcray: rank %d said HELLO in the middle of the job; ignored", src)
            return
        from .scheduler import RankState  # (the module that uses this mixin)
        old.pid, old.host = info.pid, info.host
        state = RankState(old)
        self.ranks[src] = state
        self.order.append(state)
        if self.room is not None:
            self.room.add(state)
        self.by_node.setdefault(state.node_id, []).append(state)
        self.generations[src] = self.generations.get(src, 0) + 1
        self.on_rank_back(old)
        logger.warning("hpcray: rank %d is back: a new process (pid %d on %s) took the place of the one "
                       "that died; the job has %d worker rank(s) again", src, info.pid, info.host,
                       len(self.ranks))
        self.dirty = True

    # ---- the steps ------------------------------------------------------------------------
    def _objects_lost_with(self, rank: int, where: str) -> Dict[bytes, Lineage]:
        """Values that lived only on the dead rank: pending again where their task can run once
        more (returned, by task), else an ObjectLostError."""
        rebuilds: Dict[bytes, Lineage] = {}
        for object_id, entry in list(self.objects.items()):
            value = entry.value
            if value is not None and value.location == rank and value.placement is None:
                lineage = entry.lineage
                if lineage is not None and lineage.retries_left != 0 and lineage.spec.task_id not in self.tasks:
                    entry.value = None
                    rebuilds[lineage.spec.task_id] = lineage
                    continue
                why = "" if entry.lineage is None else " (its task has no retries left to make it again)"
                entry.value = self._error_value(exceptions.ObjectLostError(
                    object_id.hex(), message=f"Object {object_id.hex()} is lost: it lived on {where}, "
                                             f"which died{why}"))
        return rebuilds

    def _rebuild(self, rebuilds: Dict[bytes, Lineage], where: str) -> None:
        """Run each task once more for the values it made that were lost (after every lost value
        is marked, so a task whose argument is being made again waits for it)."""
        remade = {object_id for lineage in rebuilds.values() for object_id in lineage.spec.return_ids
                  if object_id in self.objects and self.objects[object_id].value is None}
        if remade:  # tasks and calls not sent yet whose arguments are among them wait again
            for record in self.tasks.values():
                if record.finished or record.rank is not None:
                    continue
                for dep in remade.intersection(record.spec.deps):
                    self._wait_on(self.objects[dep], record)
        for lineage in rebuilds.values():
            spec = lineage.spec
            spec.attempt += 1
            if lineage.retries_left > 0:
                lineage.retries_left -= 1
            record = self.new_record(spec)
            record.retries_left = lineage.retries_left
            record.rebuild = True
            logger.warning("hpcray: values made by task %s lived on %s, which died; running the task "
                           "again to make them (attempt %d)", spec.name, where, spec.attempt + 1)
            self.tasks[spec.task_id] = record
            if not self._pin_arguments(record):
                continue
            if spec.deps and not self._await_arguments(record):
                continue
            if record.missing == 0:
                self._make_ready(record)

    def _tasks_lost_with(self, rank: int, where: str) -> None:
        for record in [r for r in self.tasks.values() if r.rank == rank and not r.finished]:
            if record.spec.kind != P.TASK:
                continue  # actor creations and calls: _actors_lost_with
            self._steal_settled(record)
            record.rank = None
            if record.take_retry(True):
                logger.warning("hpcray: %s died while it held task %s; running it again elsewhere "
                               "(attempt %d)", where, record.spec.name, record.spec.attempt + 1)
                self._make_ready(record, front=True)
            else:
                self._finish(record, self._error_value(exceptions.WorkerCrashedError(
                    f"The worker running task {record.spec.name} (task {record.spec.task_id.hex()}) died: "
                    f"{where} ended while the task was queued or running there, and no retries are "
                    f"left (max_retries={record.spec.max_retries})")))

    def _actors_lost_with(self, rank: int, where: str) -> None:
        for actor in [a for a in self.actors.values() if a.rank == rank and a.state is not DEAD]:
            self.restart_or_bury(actor, f"its {where} died")

    def restart_or_bury(self, actor: ActorRecord, cause: str, retry_in_flight: bool = True) -> None:
        """The actor's instance is gone (``cause``): start a new one if restarts are left, else
        it is dead. Calls in flight fail unless they may be tried again (``retry_in_flight``: only
        where the old instance can report nothing more, which a dead rank cannot)."""
        if actor.restarts_left == 0 or self._restart_blocked(actor):
            self._actor_died(actor, death_value(
                actor, f"The actor {actor.class_name} is dead: {cause}, and it has no restarts left "
                       f"(max_restarts={actor.max_restarts})"))
            return
        error = death_value(actor, f"The actor {actor.class_name} died unexpectedly before finishing "
                                   f"this call: {cause}; it is being restarted")
        if actor.restarts_left > 0:
            actor.restarts_left -= 1
        actor.restarts += 1
        actor.rank = None
        actor.state = PENDING
        inflight = sorted(actor.inflight)  # (ids of one caller grow with its submissions)
        actor.inflight.clear()
        again: Dict[tuple, List] = {}
        for task_id in inflight:
            record = self.tasks.get(task_id)
            if record is None or record.finished:
                continue
            record.rank = None
            if retry_in_flight and record.take_retry(True):
                again.setdefault(caller_of(record.spec), []).append(record)
            else:
                self._finish(record, error)
        for caller, records in again.items():  # before the calls made after them
            actor.callers.setdefault(caller, deque()).extendleft(reversed(records))
        logger.warning("hpcray: actor %s: %s; restarting it (restarts left: %s)", actor.class_name,
                       cause, "unlimited" if actor.restarts_left < 0 else actor.restarts_left)
        creation = self.tasks.get(actor.actor_id)
        if creation is not None and not creation.finished:  # it died in __init__: start that again
            creation.rank = None
            creation.spec.attempt += 1
            self._make_ready(creation, front=True)
            return
        spec = copy.copy(actor.creation)
        spec.attempt += 1
        actor.creation = spec
        record = self.new_record(spec)
        self.tasks[spec.task_id] = record  # (the creation's id: the new instance reports under it)
        if self._pin_arguments(record):
            self._make_ready(record, front=True)

    def _restart_blocked(self, actor: ActorRecord) -> bool:
        """Whether a new instance cannot be made: its creation's arguments are gone."""
        creation = actor.creation
        if creation is None:
            record = self.tasks.get(actor.actor_id)
            if record is None:
                return True
            creation = record.spec
        for dep in creation.deps:
            entry = self.objects.get(dep)
            if entry is None or entry.value is None or entry.value.is_error:
                return True
        return False

    def _bundles_lost_with(self, rank: int) -> None:
        for group in self.groups.values():
            if group.state != "CREATED" or rank not in group.ranks:
                continue
            lost = [i for i, r in enumerate(group.ranks) if r == rank]
            for index in lost:
                group.ranks[index] = None
            group.lost = lost
            self.pending_groups.append(group)
            logger.warning("hpcray: placement group %s lost bundle(s) %s with rank %d; placing them again",
                           group.group_id.hex(), lost, rank)

    def _reports_without(self, rank: int) -> None:
        for reply_id, (requester, others, reports) in list(self.reports.items()):
            if rank in others:
                self.on_rank_report(rank, reply_id, None)

    # ---- kill(no_restart=False) -------------------------------------------------------------
    def kill_and_restart(self, actor: ActorRecord) -> None:
        """``kill(actor, no_restart=False)``: end this instance; a new one starts if restarts are
        left (Ray's semantics), else the actor is dead."""
        rank = actor.rank
        was_alive = actor.state is ALIVE
        cause = "it was killed by `hpcray.kill(no_restart=False)`"
        if rank is not None:
            self.send(rank, (P.ACTOR_KILL, actor.actor_id, death_value(actor, cause)))
            state = self.ranks.get(rank)
            if state is not None:  # what the instance (or its __init__, still running) held there
                state.ledger.finish(actor_key(actor.actor_id) if was_alive else actor.actor_id)
                self.dirty = True
        # (its calls in flight fail: the killed instance may still report them, maybe from the
        # rank the new one gets, where a retried call's report could not be told from theirs)
        self.restart_or_bury(actor, cause, retry_in_flight=False)
