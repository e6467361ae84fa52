"""The scheduler's tables as rows for ``hpcray.util.state`` (Ray's state API), made on the comm
thread (a QUERY ``("state", kind)``); the public module filters, sorts and limits them.

Rows use Ray's field names. Tasks that ended are kept for the listing, the newest
``STATE_FINISHED_TASKS`` of them (older ones are counted in ``summarize_tasks``'s
``total_dropped``); dead actors stay listed as long as the scheduler keeps their record.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Dict, List, NamedTuple, Optional

from . import protocol as P
from .actor_directory import ALIVE, DEAD, PENDING
from .config import STATE_FINISHED_TASKS

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


class StateViews:
    """Mixed into the Scheduler: rows of its tasks, actors, objects, groups and nodes."""

    def _init_state_views(self) -> None:
        self.finished_tasks: deque = deque(maxlen=STATE_FINISHED_TASKS)
        self.finished_dropped = 0

    def remember_finished(self, record: Any, failed: bool) -> None:
        """A task or call ended (``Scheduler._finish``): one tuple of what its row shows (not the
        spec, which holds the arguments); the row is made when asked."""
        if len(self.finished_tasks) == self.finished_tasks.maxlen:
            self.finished_dropped += 1
        spec = record.spec
        self.finished_tasks.append((_Ended(spec.task_id, spec.name, spec.kind, spec.attempt, spec.actor_id,
                                           spec.demand), record.rank, failed))

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
            return [dict(row, placement_group_id=row["placement_group_id"]) for row in self.groups_view().values()]
        if kind == "nodes":
            return [{"node_id": node["NodeID"], "node_ip": node["NodeManagerAddress"],
                     "node_name": node["NodeManagerHostname"], "state": "ALIVE",
                     "resources_total": node["Resources"], "ranks": node["Ranks"]} for node in self.nodes_view()]
        if kind == "dropped":
            return self.finished_dropped
        raise ValueError(f"unknown state kind {kind!r}")

    def _task_rows(self) -> List[Dict[str, Any]]:
        rows = []
        for record in self.tasks.values():
            rows.append(self._task_row(record.spec, record.rank, self._live_state(record)))
        for spec, rank, failed in self.finished_tasks:
            rows.append(self._task_row(spec, rank, "FAILED" if failed else "FINISHED"))
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
                "node_id": placed.node_id if placed is not None else None,
                "worker_pid": placed.info.pid if placed is not None else None, "rank": rank,
                "job_id": spec.task_id[:4].hex(), "required_resources": dict(spec.demand)}

    def _actor_row(self, actor: Any) -> Dict[str, Any]:
        placed = self.ranks.get(actor.rank) if actor.rank is not None else None
        return {"actor_id": actor.actor_id.hex(), "class_name": actor.class_name,
                "state": _ACTOR_STATES[actor.state], "name": actor.name or "",
                "ray_namespace": actor.namespace, "node_id": placed.node_id if placed is not None else None,
                "pid": placed.info.pid if placed is not None else None, "rank": actor.rank,
                "job_id": actor.actor_id[:4].hex(), "is_detached": actor.detached}
