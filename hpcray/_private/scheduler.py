"""The scheduler: rank 0's table of tasks, objects and ranks. Runs only in rank 0's loop turns.

    SUBMIT ──► TaskRecord ──(all top-level deps ready)──► ready[shape] ──(a rank fits)──► EXECUTE
                    ▲                                                                      │
    HOLD / pins ──► ObjectEntry.refs            TASK_DONE ◄───────────────────────────────┘
                    │                               │ values (or the error) per return id
    GET_REQ ──► subscribers ◄───── OBJECT ◄─────────┘ failed deps fail their dependents
    (a task submitted on rank 0 itself subscribes its submitter at once: its returns are pushed)

Objects: an entry lives while ``refs`` > 0. Refs count the ranks that hold an ObjectRef (one per
rank, see comm.py), the submitter of a task or put (until its rank reports the ref), pending tasks
that carry the id as an argument, and stored values that contain the id.
Ready tasks are grouped by shape (demand and strategy) so one that cannot be placed does not
make the scheduler rescan the tasks behind it.
"""

from __future__ import annotations

import collections
import logging
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, List, Optional

from .. import exceptions
from .config import DEPTH_MAX, INDEX_RANKS, LOOKAHEAD_S, SHORT_TASK_S
from . import protocol as P
from .actor_directory import DEAD, ActorDirectory
from .claims import ClaimBoard
from .gc_policy import GcPolicy
from .object_ref import job_of
from .placement import InGroup, OnHost, Spread
from .placement_groups import PlacementGroups
from .progress import driver_bars
from .rank_loss import RankLoss
from .state_views import StateViews
from .streams import StreamDirectory
from .protocol import RankInfo, TaskSpec
from .resources import EPS, RankLedger, node_id_of
from .config import ignore_unhandled_errors
from .serialization import SerializedValue, deserialize, serialize

logger = logging.getLogger("hpcray")



#: the subscribers of a value the driver's own client submitted (shared: one set less per task,
#: which Python's cyclic collector would walk again and again while the task is pending)
DRIVER_ONLY = frozenset((0,))


class ObjectEntry:
    __slots__ = ("value", "refs", "subscribers", "waiters", "seen", "lineage")

    def __init__(self, refs: int = 0):
        self.value: Optional[SerializedValue] = None
        self.refs = refs
        self.subscribers: Optional[set] = None
        self.waiters: Optional[List["TaskRecord"]] = None
        self.seen = False  # an error that get() raised, a dependent task met, or a container holds
        self.lineage = None  # the task that can make this value again (rank_loss.Lineage)


class TaskRecord:
    __slots__ = ("spec", "missing", "rank", "retries_left", "pins", "finished", "stealing", "cancelled",
                 "rebuild", "claim", "sent_at")

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        self.missing = 0
        self.rank: Optional[int] = None
        self.retries_left = spec.max_retries
        self.pins: "List[bytes] | tuple" = ()  # (a list once there are some)
        self.finished = False
        self.stealing = False
        self.cancelled = False
        self.rebuild = False  # a run that makes lost values again (rank_loss.py)
        self.claim: Optional[tuple] = None  # (cell, use) while queued on a rank (claims.py)
        self.sent_at = 0.0  # when it was last sent to a rank (time.monotonic())

    def take_retry(self, retryable: bool) -> bool:
        """Whether the task (or actor call) runs again after this failure, which then uses one of
        its retries (-1: no limit): the one retry rule of tasks and actor calls."""
        if not retryable or self.retries_left == 0 or self.cancelled:
            return False
        if self.retries_left > 0:
            self.retries_left -= 1
        self.spec.attempt += 1
        return True


class RankState:
    __slots__ = ("info", "ledger", "functions", "node_id", "pace", "done_at", "busy", "finished", "failed")

    def __init__(self, info: RankInfo):
        self.info = info
        self.finished = 0  # tasks and actor calls that ended here (for the status table)
        self.failed = 0  # of which with an error
        self.ledger = RankLedger(info.resources)
        self.functions: set = set()
        self.node_id = node_id_of(info.host)
        self.pace = 0.0  # seconds between two task completions while the rank is busy (0: unknown)
        self.done_at = 0.0  # when its last task completion arrived (time.monotonic())
        self.busy = False  # whether it had tasks left at that completion

    def completed(self, sent_at: float) -> float:
        """A task sent at ``sent_at`` ended here: update the rank's pace (an average that follows
        recent tasks; completions that arrive in one batch average out with the gap before the
        batch). Returns how long the task ran, about: since the last completion while the rank
        was busy, else since it was sent."""
        now = time.monotonic()
        if self.busy:  # no idle gap since the last completion: the interval is the rank's pace
            ran = now - self.done_at
            self.pace = ran if self.pace == 0.0 else self.pace + 0.2 * (ran - self.pace)
        else:
            ran = now - sent_at
        self.done_at = now
        self.busy = self.ledger.load() > 0
        return ran

    def depth(self, floor: int) -> int:
        """How many tasks this rank may hold queued: enough to cover ``LOOKAHEAD_S`` at its pace,
        so short tasks do not each wait for a scheduler round trip; ``floor`` while the pace is
        unknown or slow (long tasks stay where another rank can still take them)."""
        pace = self.pace
        if pace == 0.0:
            return floor
        return max(floor, min(DEPTH_MAX, int(LOOKAHEAD_S / pace)))


class RoomIndex:
    """Where a task that needs CPU and may run on any rank can go, without looking at every rank
    of a large job (a scan of all ranks per task made rank 0's CPU per task grow with the job:
    1.2 ms at 1,000 ranks). Two hints, kept up by each rank's ledger (``RankLedger.on_room``,
    called when resources come back or its queue shrinks) and cleaned lazily as placement meets
    stale entries:

    - ``startable``: ranks that may start such a task now, the most recently freed first (a rank
      that just finished a task is warm); a rank leaves when it has tasks queued or no CPU free;
    - ``queues[q]``: ranks whose queue holds q tasks, below their depth (``RankState.depth``); a
      task that can start nowhere is queued on the first rank of the shortest queue."""

    def __init__(self, states: List[RankState], prefetch: int):
        self.prefetch = prefetch
        self.startable: "collections.OrderedDict[RankState, None]" = collections.OrderedDict()
        # (depth() is at most DEPTH_MAX, or the prefetch floor where that is larger)
        self.queues: List[Dict[RankState, None]] = [{} for _ in range(max(DEPTH_MAX, prefetch) + 1)]
        self.filed: Dict[RankState, int] = {}  # rank -> its queue length when filed
        self.holding: Dict[RankState, None] = {}  # ranks with tasks queued (for _rebalance)
        for state in states:
            self.add(state)

    def add(self, state: RankState) -> None:
        self.startable[state] = None
        self.refile(state)
        state.ledger.on_room = lambda: self.freed(state)

    def remove(self, state: RankState) -> None:
        state.ledger.on_room = None
        self.startable.pop(state, None)
        self.holding.pop(state, None)
        old = self.filed.pop(state, None)
        if old is not None:
            self.queues[old].pop(state, None)

    def freed(self, state: RankState) -> None:
        self.startable[state] = None
        self.startable.move_to_end(state, last=False)
        self.refile(state)

    def refile(self, state: RankState) -> None:
        """File the rank under its queue's length (or nowhere when its queue is full). Called
        whenever its queue changes: a task queued there (_execute_on), or the queue shrank."""
        queued = len(state.ledger.queued)
        if queued:
            self.holding[state] = None
        else:
            self.holding.pop(state, None)
        target = queued if queued < state.depth(self.prefetch) else None
        old = self.filed.get(state)
        if old == target:
            return
        if old is not None:
            del self.queues[old][state]
            del self.filed[state]
        if target is not None:
            self.queues[target][state] = None
            self.filed[state] = target

    def starter(self, demand: Dict[str, float], other_than: Optional[RankState] = None) -> Optional[RankState]:
        """The first rank where the task starts now, or None."""
        gone = []
        chosen = None
        for state in self.startable:
            ledger = state.ledger
            if state is not other_than and ledger.fits_now(demand):
                chosen = state
                break
            if ledger.queued or ledger.available.get("CPU", 0.0) < EPS:
                gone.append(state)  # no CPU task starts there until its ledger frees some
        for state in gone:
            del self.startable[state]
        return chosen

    def pick(self, demand: Dict[str, float]) -> Optional[RankState]:
        """Where the task starts now, else the rank to queue it on (None: no rank has room)."""
        chosen = self.starter(demand)
        if chosen is not None:
            return chosen
        stale = []
        left = len(self.filed)  # ranks filed: the buckets past the last of them are empty
        for queued, states in enumerate(self.queues):
            if not left:
                break
            left -= len(states)
            for state in states:
                if len(state.ledger.queued) != queued or queued >= state.depth(self.prefetch):
                    stale.append(state)
                elif state.ledger.can_ever_fit(demand):
                    chosen = state
                    break
            if chosen is not None:
                break
        for state in stale:
            self.refile(state)
        return chosen


class Scheduler(ActorDirectory, PlacementGroups, StreamDirectory, StateViews, RankLoss):
    """Places tasks on ranks and keeps the object table. Every method runs in the loop's turns (one thread at a time)."""

    def __init__(self, send: Callable[[int, tuple], None], workers: List[RankInfo], prefetch: int, job: int = 0):
        self.send = send
        self.job = job  # the session's job number: the first field of every id it makes
        self.prefetch = prefetch
        self.ranks: Dict[int, RankState] = {info.rank: RankState(info) for info in workers}
        self.order: List[RankState] = list(self.ranks.values())
        # where a CPU task can go, in a job of many ranks (None: _pick scans the ranks)
        self.room = RoomIndex(self.order, prefetch) if len(self.order) > INDEX_RANKS else None
        self.by_node: Dict[str, List[RankState]] = {}
        for state in self.order:
            self.by_node.setdefault(state.node_id, []).append(state)
        self.objects: Dict[bytes, ObjectEntry] = {}
        self.tasks: Dict[bytes, TaskRecord] = {}
        self.gc = GcPolicy()  # keeps the collector off these tables when they grow large
        self.ready: Dict[tuple, Deque[TaskRecord]] = {}
        self.functions: Dict[bytes, bytes] = {}
        self.dirty = False
        self._next = 0
        self.steals_out = 0  # STEALs sent whose task has not come back (STOLEN) or ended
        self.claims: Optional[ClaimBoard] = None  # queued tasks taken back without a message (runtime)
        # functions whose last task ran less than SHORT_TASK_S (RankState.completed): a task queued behind
        # one of these needs no claim (claims.py), which costs the rank a round trip to rank 0
        self.short_functions: set = set()
        self._warned_infeasible: set = set()
        self._init_actors()
        self._init_groups()
        self._init_streams()
        self._init_state_views()
        self._init_rank_loss()
        self.children: Dict[bytes, set] = {}  # task -> tasks it submitted that are not done
        self.report_unhandled = not ignore_unhandled_errors()
        self._handlers = {
            P.SUBMIT: self.on_submit, P.TASK_DONE: self.on_task_done, P.BLOCKED: self.on_blocked,
            P.UNBLOCKED: self.on_unblocked, P.GET_REQ: self.on_get_request, P.PUT: self.on_put,
            P.HOLD: self.on_hold, P.QUERY: self.on_query, P.STOLEN: self.on_stolen,
            P.PIN: self.on_pin, P.HANDLED: self.on_handled, P.CANCEL: self.on_cancel, P.KILL: self.on_kill, P.ACTOR_EXITED: self.on_actor_exited, P.GET_ACTOR: self.on_get_actor,
            P.PG_CREATE: self.on_group_create, P.PG_READY: self.on_group_ready, P.PG_REMOVE: self.on_group_remove,
            P.STREAM_ITEM: self.on_stream_item, P.STREAM_ACK: self.on_stream_ack,
            P.RANK_REPORT: self.on_rank_report, P.PROGRESS: self.on_progress, P.REFETCH: self.on_refetch,
            P.HELLO: self.on_hello,
        }
        # requests waiting for ranks' reports: reply id -> (requester, ranks to hear from, reports)
        self.reports: Dict[bytes, tuple] = {}
        # this rank's own report (runtime wires it: status.rank_report with rank 0's object plane)
        self.local_report: Callable[[str], Any] = lambda what: None

    new_record = TaskRecord

    # ---- messages -------------------------------------------------------------------------
    def handle(self, src: int, msg: tuple) -> None:
        handler = self._handlers.get(msg[0])
        if handler is not None:
            handler(src, *msg[1:])

    def on_submit(self, src: int, spec: TaskSpec) -> None:
        if spec.fn_blob is not None:
            self.functions[spec.fn_id] = spec.fn_blob
            spec.fn_blob = None
        record = TaskRecord(spec)
        if spec.num_returns == P.STREAMING:
            self.open_stream(src, spec.task_id)
        objects = self.objects
        for return_id in spec.return_ids:
            objects[return_id] = entry = ObjectEntry(refs=1)  # the submitter's hold
            if src == 0:  # this rank's client: its returns are delivered as they are set, so its
                entry.subscribers = DRIVER_ONLY  # get() finds them here (no GET_REQ, see CoreClient.submit)
        if spec.kind == P.ACTOR_CREATE and not self.submit_actor_creation(src, record):
            for return_id in spec.return_ids:  # answered without a new actor: nothing to run
                self._set_value(return_id, serialize(None))
            return
        self.tasks[spec.task_id] = record
        if spec.parent is not None and spec.parent in self.tasks:
            self.children.setdefault(spec.parent, set()).add(spec.task_id)
        if (spec.deps or spec.args.contained) and not self._pin_arguments(record):
            return
        strategy = spec.strategy
        if type(strategy) is InGroup and self.group_removed(spec):
            self.fail_outside_group(record)
            return
        if type(strategy) is OnHost and not strategy.soft and strategy.node_id not in self.by_node:
            self._finish(record, self._error_value(exceptions.TaskUnschedulableError(
                f"Task {spec.name}: NodeAffinitySchedulingStrategy names node {strategy.node_id}, "
                "which is not part of this job")))
            return
        if spec.deps and not self._await_arguments(record):
            return
        if spec.kind == P.ACTOR_METHOD:
            self.submit_actor_call(src, record)
        elif record.missing == 0:
            self._make_ready(record)

    def _await_arguments(self, record: TaskRecord) -> bool:
        """Count the task's top-level arguments still to come (it waits on their entries);
        False, with the task failed, when one of them is an error."""
        for dep in set(record.spec.deps):
            entry = self.objects[dep]
            if entry.value is None:
                self._wait_on(entry, record)
            elif entry.value.is_error:
                entry.seen = True
                self._finish(record, entry.value)
                return False
        return True

    @staticmethod
    def _wait_on(entry: ObjectEntry, record: TaskRecord) -> None:
        """The task waits for this argument's value (``_set_value`` counts it down)."""
        if entry.waiters is None:
            entry.waiters = []
        entry.waiters.append(record)
        record.missing += 1

    def _pin_arguments(self, record: TaskRecord) -> bool:
        """Hold the task's arguments (top-level and nested refs) until it ends; False, with the
        task failed, when one of them is gone."""
        spec = record.spec
        lost = None
        pins = record.pins = list(record.pins)
        for object_id in list(spec.deps) + list(spec.args.contained):
            entry = self.objects.get(object_id)
            if entry is None:
                lost = lost or object_id
                continue
            entry.refs += 1
            pins.append(object_id)
        if lost is not None:
            self._finish(record, self._error_value(exceptions.ObjectLostError(
                lost.hex(), message=f"Task {spec.name}: its argument {lost.hex()} was freed or lost")))
            return False
        return True

    def on_handled(self, src: int, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None:
            entry.seen = True

    def on_pin(self, src: int, object_ids: List[bytes]) -> None:
        """Refs found in a task's return values: held until that TASK_DONE is handled, so the
        task's own copies dying on its rank cannot free them first."""
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is not None:
                entry.refs += 1

    def on_task_done(self, src: int, task_id: bytes, values: Optional[List[SerializedValue]],
                     error: Optional[SerializedValue], retryable: bool) -> None:
        try:
            self._task_done(src, task_id, values, error, retryable)
        finally:
            for value in values or ():
                for object_id in value.contained:
                    self._unpin(object_id)  # the PIN sent before this TASK_DONE

    def _task_done(self, src: int, task_id: bytes, values: Optional[List[SerializedValue]],
                   error: Optional[SerializedValue], retryable: bool) -> None:
        record = self.tasks.get(task_id)
        state = self.ranks.get(src)
        if state is not None:
            state.finished += 1
            state.failed += error is not None
        if state is not None and (record is None or record.spec.kind == P.TASK):
            state.ledger.finish(task_id)
            # (a new pace, and so depth, counts from its next refile)
            ran = state.completed(record.sent_at if record is not None else 0.0)
            self.dirty = True
            if record is not None:
                if ran < SHORT_TASK_S:
                    self.short_functions.add(record.spec.fn_id)
                elif ran > 20 * SHORT_TASK_S:  # (between the two: batched reports, a busy driver)
                    self.short_functions.discard(record.spec.fn_id)
        if record is not None and record.claim is not None:
            self.claims.give_back(src, record.claim)
            record.claim = None
        if record is None or record.finished:
            return
        self._steal_settled(record)
        kind = record.spec.kind
        if kind == P.ACTOR_CREATE:
            self.actor_created(src, record, error)
            return
        if kind == P.ACTOR_METHOD:
            self.actor_call_done(src, record, error, retryable, values)
            return
        if error is not None:
            if record.take_retry(retryable):
                record.rank = None
                self._make_ready(record)
                return
            self._finish(record, error)
        else:
            self._finish(record, None, values)

    def on_cancel(self, src: int, task_id: bytes, force: bool, recursive: bool) -> None:
        """Cancel a task: one not yet sent to a rank fails at once; one on a rank is dropped from
        its queue or interrupted there. Its dependents fail with it; finished tasks are left alone."""
        record = self.tasks.get(task_id)
        if record is None or record.finished or record.spec.kind == P.ACTOR_CREATE:
            return
        if recursive:
            for child in list(self.children.get(task_id, ())):
                self.on_cancel(src, child, force, True)
        record.cancelled = True
        if record.rank is None:
            self._finish(record, serialize(exceptions.TaskCancelledError(task_id.hex()), is_error=True))
        else:
            self.send(record.rank, (P.CANCEL_TASK, task_id, force))

    def on_blocked(self, src: int, task_id: bytes) -> None:
        state = self.ranks.get(src)
        if state is not None:
            state.ledger.block(task_id)
            self.dirty = True

    def on_unblocked(self, src: int, task_id: bytes) -> None:
        state = self.ranks.get(src)
        if state is not None:
            state.ledger.unblock(task_id)

    def on_get_request(self, src: int, object_ids: List[bytes]) -> None:
        for object_id in object_ids:
            entry = self.objects.get(object_id)
            if entry is None:
                self.send(src, (P.OBJECT, object_id, self._error_value(exceptions.ObjectLostError(
                    object_id.hex(), message=self._lost_message(object_id)))))
            elif entry.value is not None:
                self.send(src, (P.OBJECT, object_id, entry.value))
            else:
                if entry.subscribers is None or entry.subscribers is DRIVER_ONLY:
                    entry.subscribers = set(entry.subscribers or ())
                entry.subscribers.add(src)

    def _lost_message(self, object_id: bytes) -> str:
        job = job_of(object_id)
        if job != self.job:
            return (f"Object {object_id.hex()} belongs to an earlier session (job {job}), which ended "
                    "with shutdown(): its values are gone")
        return f"Object {object_id.hex()} was freed or never existed in this session"

    @staticmethod
    def new_entry(refs: int) -> ObjectEntry:
        return ObjectEntry(refs=refs)

    def on_put(self, src: int, object_id: bytes, value: SerializedValue) -> None:
        self.objects[object_id] = ObjectEntry(refs=1)  # the putter's hold
        self._set_value(object_id, value)

    def on_hold(self, src: int, object_id: bytes, delta: int) -> None:
        entry = self.objects.get(object_id)
        if entry is None:
            return
        entry.refs += delta
        if entry.refs <= 0 and entry.value is not None:
            self._free(object_id, entry)

    def on_stolen(self, src: int, task_id: bytes) -> None:
        """A rank handed back a task it had queued but not started: place it again, first."""
        state = self.ranks.get(src)
        if state is not None:
            state.ledger.finish(task_id)
        record = self.tasks.get(task_id)
        if record is None or record.finished:
            return
        self._steal_settled(record)
        record.rank = None
        self._make_ready(record, front=True)

    def gather_reports(self, src: int, reply_id: bytes, what: str) -> None:
        """Every rank's report ``what`` ("timeline", "memory": status.rank_report) for ``src``,
        by rank: this rank's at once, each worker rank's when it answers RANK_REPORT_REQ (a rank
        that cannot answer leaves the requester to its timeout)."""
        reports = {0: self.local_report(what)}
        others = {rank for rank in self.ranks if rank != 0}
        if not others:
            self.send(src, (P.OBJECT, reply_id, serialize(reports)))
            return
        self.reports[reply_id] = (src, others, reports)
        for rank in others:
            self.send(rank, (P.RANK_REPORT_REQ, reply_id, what))

    def on_progress(self, src: int, state: Any) -> None:
        driver_bars().show(state)

    def on_rank_report(self, src: int, reply_id: bytes, report: Any) -> None:
        waiting = self.reports.get(reply_id)
        if waiting is None:
            return
        requester, others, reports = waiting
        reports[src] = report
        others.discard(src)
        if not others:
            del self.reports[reply_id]
            self.send(requester, (P.OBJECT, reply_id, serialize(reports)))

    def _steal_settled(self, record: TaskRecord) -> None:
        """A task asked back came back, or ran where it was (it had started) or was dropped."""
        if record.stealing:
            record.stealing = False
            self.steals_out -= 1

    def on_query(self, src: int, name: str, reply_id: bytes) -> None:
        views = {"resources": self.resources_view, "nodes": self.nodes_view, "stats": self.stats,
                 "named_actors": self.named_actors_view, "placement_groups": self.groups_view}
        if name in ("timeline", "memory"):
            self.gather_reports(src, reply_id, name)
            return
        if isinstance(name, tuple) and name[0] == "state":  # ("state", kind): hpcray.util.state
            self.send(src, (P.OBJECT, reply_id, serialize(self.state_rows(name[1]))))
            return
        if isinstance(name, tuple):  # ("placement_group_named", name)
            self.send(src, (P.OBJECT, reply_id, serialize(self.group_named(name[1]))))
            return
        self.send(src, (P.OBJECT, reply_id, serialize(views[name]())))

    # ---- placement ------------------------------------------------------------------------
    def _make_ready(self, record: TaskRecord, front: bool = False) -> None:
        spec = record.spec
        if type(spec.strategy) is InGroup and self.group_removed(spec):
            self.fail_outside_group(record)  # e.g. a retry, or deps ready, after the removal
            return
        shape = (tuple(sorted(spec.demand.items())), spec.strategy)
        queue = self.ready.get(shape)
        if queue is None:
            queue = self.ready[shape] = deque()
            if not self._feasible(spec) and shape not in self._warned_infeasible:
                self._warned_infeasible.add(shape)
                logger.warning(
                    "hpcray: task %s needs %s, which no rank of this job has (resources per rank: %s); "
                    "it stays pending", spec.name, spec.demand,
                    sorted({str(s.ledger.total) for s in self.order}))
        if front:
            queue.appendleft(record)
        else:
            queue.append(record)
        self.dirty = True

    def _feasible(self, spec: TaskSpec) -> bool:
        group = self.group_of(spec)
        if group is not None:  # waits for its group; removal fails it
            return group.state != "CREATED" or bool(group.lost) or any(
                s.ledger.can_ever_fit(spec.demand) for s in self.group_candidates(spec))
        return any(s.ledger.can_ever_fit(spec.demand) for s in self._candidates(spec, soft_ok=True))

    def _candidates(self, spec: TaskSpec, soft_ok: bool) -> List[RankState]:
        strategy = spec.strategy
        if type(strategy) is InGroup:
            return self.group_candidates(spec)
        if type(strategy) is OnHost:
            ranks = self.by_node.get(strategy.node_id, [])
            if strategy.soft and soft_ok and not any(s.ledger.can_ever_fit(spec.demand) for s in ranks):
                return self.order
            return ranks
        return self.order

    def dispatch(self) -> None:
        """Start every ready task that some rank can take now (or queue a few, to hide latency)."""
        self.dirty = False
        self.gc.note(len(self.tasks) + len(self.objects))
        if self.pending_groups:
            self.place_pending_groups()
        for shape in list(self.ready):
            queue = self.ready[shape]
            while queue:
                record = queue[0]
                # an argument is being made again (rank_loss._rebuild): the record comes back to a
                # queue when it is there, so an entry here may be stale (missing, or sent already)
                if record.finished or record.missing or record.rank is not None:
                    queue.popleft()
                    continue
                state = self._pick(record.spec)
                if state is None:
                    break
                queue.popleft()
                self._execute_on(state, record)
            if not queue:
                del self.ready[shape]
        self._rebalance()

    def _rebalance(self) -> None:
        """Ask for queued tasks back when another rank could start them now (no hoarding). At
        most one task is on its way back per rank with an empty queue, and a shape of task that
        fits none of them is not tried again in the same pass."""
        if self.room is not None:
            donors = list(self.room.holding)
        else:
            donors = [state for state in self.order if state.ledger.queued]
        takers = len(self.order) - len(donors)  # ranks with nothing queued
        if takers <= self.steals_out or not donors:
            return
        unfit: set = set()
        moved = 0
        for donor in donors:
            for task_id, demand in list(donor.ledger.queued):
                record = self.tasks.get(task_id)
                if record is None or record.stealing or record.spec.kind != P.TASK or record.rank != donor.info.rank:
                    continue
                spec = record.spec
                shape = (tuple(sorted(demand.items())), spec.strategy)
                if shape in unfit:
                    continue
                candidates = self._candidates(spec, soft_ok=True)
                if self.room is not None and self._indexed(spec, candidates):
                    taker = self.room.starter(demand, other_than=donor)
                else:
                    taker = next((s for s in candidates if s is not donor and s.ledger.fits_now(demand)), None)
                if taker is None:
                    unfit.add(shape)
                    continue
                if record.claim is not None:  # taken back at once, or started there meanwhile
                    if not self._take_back(donor, record):
                        continue
                    self._execute_on(taker, record)
                    moved += 1
                else:
                    record.stealing = True
                    self.steals_out += 1
                    self.send(donor.info.rank, (P.STEAL, task_id))
                if self.steals_out + moved >= takers:
                    return

    def _behind_a_long_one(self, state: RankState) -> bool:
        """Whether a task queued on ``state`` waits behind one that may run long (of a function
        whose last task did not end within SHORT_TASK_S, or that has not run yet): then it gets
        a claim, so that it can be taken back even if the rank cannot answer."""
        short = self.short_functions
        tasks = self.tasks
        for task_id in state.ledger.running:
            record = tasks.get(task_id)  # (None: what an actor holds there)
            if record is not None and record.spec.fn_id not in short:
                return True
        return False

    def _take_back(self, donor: RankState, record: TaskRecord) -> bool:
        """Take a task queued on ``donor`` back through its claim cell (claims.py): True when the
        rank will not start it (it drops it unannounced), False when it started it already."""
        claim, record.claim = record.claim, None
        if not self.claims.take_back(claim):
            record.claim = claim  # (running there: the cell is given back with its TASK_DONE)
            return False
        self.claims.give_back(donor.info.rank, claim)
        donor.ledger.finish(record.spec.task_id)
        record.rank = None
        return True

    def _indexed(self, spec: TaskSpec, candidates: List[RankState]) -> bool:
        """Whether the task's placement can use the RoomIndex (where there is one): it needs
        CPU, may go to any rank (DEFAULT, a soft affinity that fits nowhere, ...), and no round
        robin (SPREAD)."""
        return candidates is self.order and type(spec.strategy) is not Spread and spec.demand.get("CPU", 0.0) > EPS

    def _pick(self, spec: TaskSpec) -> Optional[RankState]:
        candidates = self._candidates(spec, soft_ok=True)
        if self.room is not None and self._indexed(spec, candidates):
            return self.room.pick(spec.demand)
        count = len(candidates)
        if count == 0:
            return None
        # SPREAD: round robin. DEFAULT: the first rank with room, so a trickle of tasks keeps
        # hitting one warm rank while idle ranks sleep (they do not compete for cores).
        spread = type(spec.strategy) is Spread
        start = self._next % count if spread else 0
        for i in range(count):
            state = candidates[(start + i) % count]
            if state.ledger.fits_now(spec.demand):
                if spread:
                    self._next = start + i + 1
                return state
        if type(spec.strategy) is OnHost and spec.strategy.soft:
            preferred = self.by_node.get(spec.strategy.node_id, [])
            if any(s.ledger.fits_now(spec.demand) for s in preferred):
                return None
        best = None
        for state in candidates:
            ledger = state.ledger
            if len(ledger.queued) < state.depth(self.prefetch) and ledger.can_ever_fit(spec.demand):
                if best is None or ledger.load() < best.ledger.load():
                    best = state
        return best

    def _execute_on(self, state: RankState, record: TaskRecord) -> None:
        spec = record.spec
        record.rank = state.info.rank
        record.sent_at = time.monotonic()
        if not state.ledger.assign(spec.task_id, spec.demand):  # queued there
            if self.room is not None:
                self.room.refile(state)
            if self.claims is not None and spec.kind == P.TASK and self._behind_a_long_one(state):
                record.claim = self.claims.hand_out(state.info.rank)
        blob = None
        if spec.fn_id not in state.functions:
            blob = self.functions.get(spec.fn_id)
            state.functions.add(spec.fn_id)
        values = [self.objects[d].value for d in spec.deps]
        self.send(state.info.rank, (P.EXECUTE, spec, blob, values, record.claim))
        if spec.kind == P.ACTOR_CREATE:
            self.actor_placed(spec, state.info.rank)

    # ---- completion and freeing -------------------------------------------------------------
    def _finish(self, record: TaskRecord, error: Optional[SerializedValue],
                values: Optional[List[SerializedValue]] = None) -> None:
        record.finished = True
        spec = record.spec
        self.remember_finished(record, error)
        self.tasks.pop(spec.task_id, None)
        self.children.pop(spec.task_id, None)
        if spec.parent is not None:
            siblings = self.children.get(spec.parent)
            if siblings is not None:
                siblings.discard(spec.task_id)
        if record.rebuild:  # only the values that were lost: the others are still there
            for i, return_id in enumerate(spec.return_ids):
                entry = self.objects.get(return_id)
                if entry is not None and entry.value is None:
                    self._set_value(return_id, error if error is not None else values[i])
        else:
            for i, return_id in enumerate(spec.return_ids):
                self._set_value(return_id, error if error is not None else values[i])
            if error is None and self.keeps_lineage and values and spec.kind == P.TASK:
                self.keep_lineage(record, values)
        if spec.num_returns == P.STREAMING:
            self.close_stream(spec.task_id, error)
        for object_id in record.pins:
            self._unpin(object_id)
        record.pins = ()

    def _set_value(self, object_id: bytes, value: SerializedValue) -> None:
        entry = self.objects.get(object_id)
        if entry is None:
            return
        entry.value = value
        for contained in value.contained:
            inner = self.objects.get(contained)
            if inner is not None:
                inner.refs += 1
                inner.seen = True
        if entry.subscribers:
            for rank in entry.subscribers:
                self.send(rank, (P.OBJECT, object_id, value))
        entry.subscribers = None
        if entry.waiters:
            entry.seen = True
            for record in entry.waiters:
                if record.finished:
                    continue
                if value.is_error:
                    self._finish(record, value)
                else:
                    record.missing -= 1
                    if record.missing == 0:
                        if record.spec.kind == P.ACTOR_METHOD:
                            self.call_dependencies_ready(record)
                        else:
                            self._make_ready(record)
        entry.waiters = None
        if entry.refs <= 0:
            self._free(object_id, entry)

    def _unpin(self, object_id: bytes) -> None:
        entry = self.objects.get(object_id)
        if entry is not None:
            entry.refs -= 1
            if entry.refs <= 0 and entry.value is not None:
                self._free(object_id, entry)

    def _free(self, object_id: bytes, entry: ObjectEntry) -> None:
        if self.objects.get(object_id) is not entry:
            return  # already freed further down the same cascade
        del self.objects[object_id]
        if entry.lineage is not None:
            self.lineage_released(entry.lineage)
        if entry.value.is_error and not entry.seen and self.report_unhandled:
            self._report_unhandled(entry.value)
        if entry.value.location is not None:  # its rank keeps the value for consumers: drop it
            self.send(entry.value.location, (P.FREE, object_id))
        for contained in entry.value.contained:
            self._unpin(contained)
        actor = self.actor_by_handle.get(object_id)
        if actor is not None:
            self.handle_released(actor)

    @staticmethod
    def _report_unhandled(value: SerializedValue) -> None:
        """Like Ray: an error nobody ever looked at is logged once when its last ref goes."""
        try:
            error = deserialize(value)
        except Exception as exc:  # the report must never break the scheduler
            error = exc
        logger.error("Unhandled error (suppress with 'RAY_IGNORE_UNHANDLED_ERRORS=1'): %s", error)

    @staticmethod
    def _error_value(error: BaseException) -> SerializedValue:
        return serialize(error, is_error=True)

    # ---- views for the public API (run on the comm thread through a CALL) ----------------
    def resources_view(self) -> Dict[str, Dict[str, float]]:
        total: Dict[str, float] = {}
        available: Dict[str, float] = {}
        for state in self.order:
            for key, amount in state.ledger.total.items():
                if key.startswith("node:"):
                    total[key] = 1.0
                else:
                    total[key] = total.get(key, 0.0) + amount
            for key, amount in state.ledger.available.items():
                if key.startswith("node:"):
                    available[key] = 1.0
                elif amount > 1e-9:
                    available[key] = available.get(key, 0.0) + amount
        return {"total": total, "available": available}

    def work_on_rank(self, rank: int) -> str:
        """What ``rank`` was given, in words ("tasks f, g x2; actors Counter"), for the message
        that it died. A watcher thread calls it, not the comm thread: it reads copies, and a
        table that changed while being copied gives an empty answer."""
        try:
            tasks = [r.spec.name for r in list(self.tasks.values()) if r.rank == rank and not r.finished]
            actors = [a.class_name for a in list(self.actors.values()) if a.rank == rank and a.state is not DEAD]
        except RuntimeError:
            return ""
        parts = []
        for label, names in (("tasks", tasks), ("actors", actors)):
            if names:
                counted = Counter(names).most_common()
                shown = ", ".join(name if n == 1 else f"{name} x{n}" for name, n in counted[:5])
                parts.append(f"{label} {shown}" + (", ..." if len(counted) > 5 else ""))
        return "; ".join(parts)

    def nodes_view(self) -> List[dict]:
        nodes = []
        for node_id, states in self.by_node.items():
            resources: Dict[str, float] = {}
            for state in states:
                for key, amount in state.ledger.total.items():
                    resources[key] = 1.0 if key.startswith("node:") else resources.get(key, 0.0) + amount
            info = states[0].info
            address = next((k[5:] for k in info.resources if k.startswith("node:") and k != "node:__internal_head__"), "")
            nodes.append({
                "NodeID": node_id, "Alive": True, "NodeManagerAddress": address,
                "NodeManagerHostname": info.host, "NodeName": address, "Resources": resources,
                "Labels": {"ray.io/node-id": node_id}, "Ranks": [s.info.rank for s in states],
            })
        for info in self.dead_ranks.values():  # a host whose every rank died: Ray's dead node
            node_id = node_id_of(info.host)
            if node_id not in self.by_node and all(n["NodeID"] != node_id for n in nodes):
                nodes.append({"NodeID": node_id, "Alive": False, "NodeManagerAddress": "",
                              "NodeManagerHostname": info.host, "NodeName": "", "Resources": {},
                              "Labels": {"ray.io/node-id": node_id}, "Ranks": []})
        return nodes

    def status_view(self) -> Dict[str, Any]:
        """What the status table shows (status.py): per rank its resources in use, the tasks it
        runs (holding resources), the tasks and calls queued there (actor calls sent to its
        actors count as queued), finished and failed, its actors; and the work no rank holds:
        waiting for arguments, ready to place, needing what no rank has."""
        running: Dict[int, int] = {}
        queued: Dict[int, int] = {}
        waiting = 0
        for record in self.tasks.values():
            rank = record.rank
            if rank is not None:
                state = self.ranks.get(rank)
                counts = running if state is not None and record.spec.task_id in state.ledger.running else queued
                counts[rank] = counts.get(rank, 0) + 1
            elif record.missing:
                waiting += 1
        actors: Dict[int, int] = {}
        for actor in self.actors.values():
            if actor.rank is not None and actor.state is not DEAD:
                actors[actor.rank] = actors.get(actor.rank, 0) + 1
        ranks = []
        for state in self.order:
            ledger = state.ledger
            ranks.append({
                "rank": state.info.rank, "host": state.info.host, "pid": state.info.pid,
                "cpu_used": ledger.total.get("CPU", 0.0) - ledger.available.get("CPU", 0.0),
                "cpu_total": ledger.total.get("CPU", 0.0), "running": running.get(state.info.rank, 0),
                "queued": queued.get(state.info.rank, 0),
                "finished": state.finished, "failed": state.failed,
                "actors": actors.get(state.info.rank, 0)})
        infeasible = []
        for queue in self.ready.values():
            if queue and not self._feasible(queue[0].spec):
                infeasible.append((queue[0].spec.name, dict(queue[0].spec.demand), len(queue)))
        return {"ranks": ranks, "waiting_for_arguments": waiting,
                "ready": sum(len(q) for q in self.ready.values()), "infeasible": infeasible,
                "objects": len(self.objects),
                # values the table itself holds, on rank 0 (inline ones; all of them single-rank)
                "table_bytes": sum(e.value.nbytes for e in self.objects.values() if e.value is not None)}

    def stats(self) -> Dict[str, int]:
        return {"objects": len(self.objects), "tasks": len(self.tasks),
                "bytes_held": sum(e.value.nbytes for e in self.objects.values() if e.value is not None),
                "ready": sum(len(q) for q in self.ready.values()),
                "actors": sum(1 for a in self.actors.values() if a.state is not DEAD)}
