"""The scheduler's tables as rows for ``hpcray.util.state`` (Ray's state API), made on the comm
thread (a QUERY ``("state", kind)``); the public module filters, sorts and limits them.

Rows use Ray's field names. Tasks that ended are kept for the listing, the newest
``STATE_FINISHED_TASKS`` of them (older ones are counted in ``summarize_tasks``'s
``total_dropped``); dead actors stay listed as long as the scheduler keeps their record.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .. import exceptions
from . import protocol as P
from .actor_directory import ALIVE, DEAD, PENDING
from .config import STATE_FINISHED_TASKS
from .placement import InGroup
from .resources import node_id_of, worker_id_of
from .serialization import SerializedValue, deserialize

_TYPES = {P.TASK: "NORMAL_TASK", P.ACTOR_CREATE: "ACTOR_CREATION_TASK", P.ACTOR_METHOD: "ACTOR_TASK"}
_ACTOR_STATES = {PENDING: "PENDING_CREATION", ALIVE: "ALIVE", DEAD: "DEAD"}


class _Ended(NamedTuple):
    """What the row of a task that ended shows."""
    task_id: bytes
    name: str
    kind: int
    attempt: int
    actor_id: Optional[bytes]
    demand: Dict[str, float]
    parent: Optional[bytes]
    strategy: Any
    submitted: float
    ended: float
    error: Optional[SerializedValue]  # (read by the caller of the state API: it is user code)


#: the fields Ray's state API shows only with ``detail=True`` (``None`` without it), per kind
DETAIL_FIELDS = {
    "tasks": ("language", "required_resources", "placement_group_id", "creation_time_ms", "end_time_ms",
              "error_message"),
    "actors": ("is_detached", "required_resources", "placement_group_id", "num_restarts", "death_cause"),
    "placement_groups": ("bundles",),
    "workers": ("exit_detail",),
}


def _group_of(strategy: Any) -> Optional[str]:
    return strategy.group_id.hex() if type(strategy) is InGroup else None


#: Ray's error types (``ErrorType``) of the errors a task can end with; any other is
#: TASK_EXECUTION_EXCEPTION (the first match counts: a cancelled task's error is a RayTaskError too)
_ERROR_TYPES = ((exceptions.TaskCancelledError, "TASK_CANCELLED"), (exceptions.WorkerCrashedError, "WORKER_DIED"),
                (exceptions.ActorUnavailableError, "ACTOR_UNAVAILABLE"), (exceptions.RayActorError, "ACTOR_DIED"),
                (exceptions.OutOfMemoryError, "OUT_OF_MEMORY"), (exceptions.ObjectLostError, "OBJECT_LOST"))


def read_error(value: Any) -> Tuple[str, str]:
    """(Ray's error type, message) of a task's or actor's error, read here, in the caller's
    thread (unpickling an exception runs its class's code: never on the runtime's threads)."""
    try:
        error = deserialize(value)
    except Exception as exc:
        return "TASK_EXECUTION_EXCEPTION", f"(the error could not be read here: {type(exc).__name__}: {exc})"
    kind = next((name for cls, name in _ERROR_TYPES if isinstance(error, cls)), "TASK_EXECUTION_EXCEPTION")
    return kind, str(error)


def finish_row(kind: str, row: Dict[str, Any]) -> Dict[str, Any]:
    """A row as the state API's caller gets it (run in the caller's thread, not the comm thread
    that made the row): the task's error type and message, the actor's death cause."""
    error = row.pop("_error", None)
    if kind == "tasks" and error is not None:
        row["error_type"], row["error_message"] = read_error(error)
    elif kind == "actors":
        row["death_cause"] = None
        if error is not None:
            row["death_cause"] = {"actor_died_error_context": {
                "error_message": read_error(error)[1], "actor_id": row["actor_id"], "class_name": row["class_name"]}}
    return row


class StateViews:
    """Mixed into the Scheduler: rows of its tasks, actors, objects, groups and nodes."""

    def _init_state_views(self) -> None:
        self.driver_node_id = ""  # (the runtime names rank 0's host)
        self.finished_tasks: deque = deque(maxlen=STATE_FINISHED_TASKS)
        self.finished_dropped = 0

    def remember_finished(self, record: Any, error: Optional[SerializedValue]) -> None:
        """A task or call ended (``Scheduler._finish``): one tuple of what its row shows (not the
        spec, which holds the arguments); the row is made when asked."""
        if len(self.finished_tasks) == self.finished_tasks.maxlen:
            self.finished_dropped += 1
        spec = record.spec
        # a plain tuple of _Ended's fields and the rank (made into an _Ended when listed)
        self.finished_tasks.append((spec.task_id, spec.name, spec.kind, spec.attempt, spec.actor_id, spec.demand,
                                    spec.parent, spec.strategy, spec.submitted, time.time(), error, record.rank))

    def state_rows(self, kind: str) -> Any:
        if kind == "tasks":
            return self._task_rows()
        if kind == "actors":
            return [self._actor_row(actor) for actor in self.actors.values()]
        if kind == "objects":
            return [{"object_id": object_id.hex(), "object_size": entry.value.nbytes if entry.value is not None else None,
                     "task_status": "FINISHED" if entry.value is not None else "PENDING",
                     "reference_count": entry.refs, "type": "DRIVER"}
                    for object_id, entry in self.objects.items()]
        if kind == "placement_groups":
            return list(self.groups_view().values())
        if kind == "nodes":
            return [{"node_id": node["NodeID"], "node_ip": node["NodeManagerAddress"],
                     "node_name": node["NodeManagerHostname"], "state": "ALIVE" if node["Alive"] else "DEAD",
                     "is_head_node": node["NodeID"] == self.driver_node_id, "labels": node["Labels"],
                     "resources_total": node["Resources"], "ranks": node["Ranks"]} for node in self.nodes_view()]
        if kind == "workers":
            return self._worker_rows()
        if kind == "dropped":
            return self.finished_dropped
        raise ValueError(f"unknown state kind {kind!r}")

    def _worker_rows(self) -> List[Dict[str, Any]]:
        """A row per process of the job: the driver (rank 0; under one rank it runs the tasks
        too), each worker rank, and each rank that died."""
        rows = [self._worker_row(0, "DRIVER", os.getpid(), self.driver_node_id, True)]
        for rank, state in sorted(self.ranks.items()):
            if rank != 0:
                rows.append(self._worker_row(rank, "WORKER", state.info.pid, state.node_id, True))
        for rank, info in sorted(self.dead_ranks.items()):
            row = self._worker_row(rank, "WORKER", info.pid, node_id_of(info.host), False)
            row.update(exit_type="SYSTEM_ERROR", exit_detail="the rank's process died (MPI reported it failed)")
            rows.append(row)
        return rows

    def _worker_row(self, rank: int, kind: str, pid: int, node_id: str, alive: bool) -> Dict[str, Any]:
        return {"worker_id": worker_id_of(rank, pid), "is_alive": alive, "worker_type": kind, "exit_type": None,
                "node_id": node_id, "pid": pid, "rank": rank, "exit_detail": None}

    def _task_rows(self) -> List[Dict[str, Any]]:
        rows = []
        for record in self.tasks.values():
            rows.append(self._task_row(record.spec, record.rank, self._live_state(record)))
        for fields in self.finished_tasks:
            ended, rank = _Ended(*fields[:-1]), fields[-1]
            row = self._task_row(ended, rank, "FAILED" if ended.error is not None else "FINISHED")
            row["end_time_ms"] = ended.ended * 1e3
            row["_error"] = ended.error
            rows.append(row)
        return rows

    def _live_state(self, record: Any) -> str:
        if record.rank is None:
            return "PENDING_ARGS_AVAIL" if record.missing else "PENDING_NODE_ASSIGNMENT"
        state = self.ranks.get(record.rank)
        if state is not None and record.spec.task_id in state.ledger.running:
            return "RUNNING"
        return "SUBMITTED_TO_WORKER"  # queued on its rank, or an actor call sent to its actor

    def _task_row(self, spec: Any, rank: Optional[int], state: str) -> Dict[str, Any]:
        placed = self.ranks.get(rank) if rank is not None else None
        return {"task_id": spec.task_id.hex(), "name": spec.name, "state": state, "type": _TYPES[spec.kind],
                "func_or_class_name": spec.name, "attempt_number": spec.attempt,
                "actor_id": spec.actor_id.hex() if spec.actor_id else None,
                "parent_task_id": spec.parent.hex() if spec.parent else None,
                "node_id": placed.node_id if placed is not None else None,
                "worker_id": worker_id_of(rank, placed.info.pid) if placed is not None else None,
                "worker_pid": placed.info.pid if placed is not None else None, "rank": rank,
                "job_id": spec.task_id[:4].hex(), "error_type": None,
                # detail
                "language": "PYTHON", "required_resources": dict(spec.demand),
                "placement_group_id": _group_of(spec.strategy),
                "creation_time_ms": spec.submitted * 1e3, "end_time_ms": None, "error_message": None}

    def _actor_row(self, actor: Any) -> Dict[str, Any]:
        placed = self.ranks.get(actor.rank) if actor.rank is not None else None
        state = _ACTOR_STATES[actor.state]
        if state == "PENDING_CREATION" and actor.restarts:
            state = "RESTARTING"
        return {"actor_id": actor.actor_id.hex(), "class_name": actor.class_name,
                "state": state, "name": actor.name or "",
                "ray_namespace": actor.namespace, "node_id": placed.node_id if placed is not None else None,
                "pid": placed.info.pid if placed is not None else None, "rank": actor.rank,
                "job_id": actor.actor_id[:4].hex(),
                # detail
                "is_detached": actor.detached, "required_resources": dict(actor.lifetime),
                "placement_group_id": actor.group.hex() if actor.group else None,
                "num_restarts": actor.restarts, "_error": actor.death}
