"""Ray's state API (``ray.util.state``): what the job's tasks, actors, objects, placement groups,
nodes and processes (workers) are doing, asked of the scheduler (no server, no ports). Callable
from the driver and from tasks.

Each ``list_*`` takes Ray's ``filters=[(key, op, value)]`` (op ``"="`` or ``"!="``, the value
compared as a string, as Ray does), ``limit`` (default 100) and ``detail``; rows are dicts whose
keys are also attributes (``task.state``), with Ray's field names, plus ``rank`` (the MPI rank
that runs it). As in Ray, the fields Ray shows only in detail (a task's ``required_resources``,
``creation_time_ms``, ``end_time_ms``, ``error_message``, ``placement_group_id``; an actor's
``death_cause``, ``num_restarts``, ...) are None unless ``detail=True``; filters see every field.
``get_*`` rows have every field. Tasks that ended stay listed, the newest 10,000 of them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._private import api
from .._private.state_views import DETAIL_FIELDS, finish_row

DEFAULT_LIMIT = 100
_OPERATORS = ("=", "!=")


class StateRow(dict):
    """One row: a dict whose keys are also attributes."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _rows(kind: str, filters: Optional[Sequence[Tuple[str, str, Any]]], limit: int, timeout: float,
          detail: bool = True) -> List[StateRow]:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit must be a non-negative int, got {limit!r}")
    checked = []
    for item in filters or ():
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise ValueError(f"each filter is (key, op, value), got {item!r}")
        key, op, value = item
        if op not in _OPERATORS:
            raise ValueError(f"filter {item!r}: the operator must be one of {_OPERATORS}, got {op!r}")
        checked.append((key, op, str(value).lower()))
    if not isinstance(detail, bool):
        raise TypeError(f"detail must be True or False, got {detail!r}")
    rows = [StateRow(finish_row(kind, row)) for row in api.ensure_session().client.query(("state", kind), timeout=timeout)]
    for key, op, value in checked:
        if rows and key not in rows[0]:
            raise ValueError(f"filter key {key!r} is not a field of {kind}: {sorted(rows[0])}")
        keep = op == "="
        rows = [row for row in rows if (str(row.get(key)).lower() == value) == keep]
    rows = rows[:limit]
    if not detail:  # as Ray: the detail-only fields are there, and None
        for row in rows:
            for key in DETAIL_FIELDS.get(kind, ()):
                row[key] = None
    return rows


def _lister(kind: str, doc: str):
    def list_rows(filters=None, limit: int = DEFAULT_LIMIT, timeout: float = 30, detail: bool = False,
                  raise_on_missing_output: bool = True) -> List[StateRow]:
        return _rows(kind, filters, limit, timeout, detail)
    list_rows.__name__ = list_rows.__qualname__ = f"list_{kind}"
    list_rows.__doc__ = doc + " ``filters``: [(key, '=' or '!=', value)]; ``limit``: at most this many rows."
    return list_rows


list_tasks = _lister("tasks", "Tasks, actor creations and actor calls: pending, running or ended (newest ended kept).")
list_actors = _lister("actors", "Actors: pending creation, alive or dead.")
list_objects = _lister("objects", "Objects the job holds, with their size where their value exists.")
list_placement_groups = _lister("placement_groups", "Placement groups, their bundles, strategy and state.")
list_nodes = _lister("nodes", "Hosts of the job, with their resources and ranks.")
list_workers = _lister("workers", "The job's processes: the driver (rank 0) and each worker rank, alive or dead.")


def _one(kind: str, key: str, id: str, timeout: float) -> Optional[StateRow]:
    found = _rows(kind, [(key, "=", id)], 1, timeout)
    return found[0] if found else None


def get_task(id: str, timeout: float = 30) -> Optional[StateRow]:
    """The task (or call) with this hex id, with every field (as ``detail=True``), or None."""
    return _one("tasks", "task_id", id, timeout)


def get_actor(id: str, timeout: float = 30) -> Optional[StateRow]:
    """The actor with this hex id, with every field, or None."""
    return _one("actors", "actor_id", id, timeout)


def get_placement_group(id: str, timeout: float = 30) -> Optional[StateRow]:
    """The placement group with this hex id, with every field, or None."""
    return _one("placement_groups", "placement_group_id", id, timeout)


def get_node(id: str, timeout: float = 30) -> Optional[StateRow]:
    """The node (host) with this id, or None."""
    return _one("nodes", "node_id", id, timeout)


def get_worker(id: str, timeout: float = 30) -> Optional[StateRow]:
    """The process (rank) with this worker id, or None."""
    return _one("workers", "worker_id", id, timeout)


def summarize_tasks(timeout: float = 30) -> Dict[str, Any]:
    """Per function or class name: its type and how many tasks are in each state."""
    rows = _rows("tasks", None, 1 << 62, timeout)
    summary: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(row["func_or_class_name"], {
            "func_or_class_name": row["func_or_class_name"], "type": row["type"], "state_counts": {}})
        entry["state_counts"][row["state"]] = entry["state_counts"].get(row["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_tasks": len(rows),
                        "total_actor_tasks": sum(1 for r in rows if r["type"] == "ACTOR_TASK"),
                        "total_actor_scheduled": sum(1 for r in rows if r["type"] == "ACTOR_CREATION_TASK"),
                        "total_dropped": api.ensure_session().client.query(("state", "dropped"), timeout=timeout),
                        "summary_by": "func_name"}}


def summarize_actors(timeout: float = 30) -> Dict[str, Any]:
    """Per class: how many actors are in each state."""
    rows = _rows("actors", None, 1 << 62, timeout)
    summary: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        entry = summary.setdefault(row["class_name"], {"class_name": row["class_name"], "state_counts": {}})
        entry["state_counts"][row["state"]] = entry["state_counts"].get(row["state"], 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(rows), "summary_by": "class"}}


def summarize_objects(timeout: float = 30) -> Dict[str, Any]:
    """How many objects the job holds, and their bytes (those whose value exists)."""
    rows = _rows("objects", None, 1 << 62, timeout)
    sizes = [r["object_size"] for r in rows if r["object_size"] is not None]
    return {"cluster": {"total_objects": len(rows), "total_size_mb": sum(sizes) / (1 << 20),
                        "summary": {"READY": len(sizes), "PENDING": len(rows) - len(sizes)}}}


__all__ = ["list_tasks", "list_actors", "list_objects", "list_placement_groups", "list_nodes", "list_workers",
           "get_task", "get_actor", "get_placement_group", "get_node", "get_worker", "summarize_tasks",
           "summarize_actors", "summarize_objects", "StateRow"]
