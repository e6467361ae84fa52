"""Resource amounts: what a rank offers, and the ledger of what its tasks use.

``RankLedger`` is the single rule for "may this task start here now": the scheduler keeps one per
rank as its picture of that rank, and each rank keeps one for itself. Both apply the same events
(assign, finish, block, unblock) in the same order per rank, so the pictures agree.
A task blocked in ``get()`` gives its CPUs back until it resumes (so task trees cannot deadlock).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections import deque
from typing import Callable, Deque, Dict, List, Optional, Tuple

EPS = 1e-9


def fits(available: Dict[str, float], demand: Dict[str, float]) -> bool:
    for key, amount in demand.items():
        if available.get(key, 0.0) + EPS < amount:
            return False
    return True


class RankLedger:
    """Resources of one rank: running tasks hold their demand; the rest wait in FIFO order."""

    __slots__ = ("total", "available", "running", "blocked", "queued", "reserved", "on_room")

    def __init__(self, total: Dict[str, float]):
        self.total = dict(total)
        self.available = dict(total)
        self.running: Dict[bytes, Dict[str, float]] = {}
        self.blocked: set = set()
        self.queued: Deque[Tuple[bytes, Dict[str, float]]] = deque()
        self.reserved: Dict[tuple, Tuple[Dict[str, float], Dict[str, float]]] = {}
        # called when resources come back or the queue shrinks (the scheduler's picture of a
        # rank: Scheduler.roomy); None on the rank's own ledger
        self.on_room: Optional[Callable[[], None]] = None

    def reserve(self, key: tuple, bundle: Dict[str, float], added: Dict[str, float]) -> List[bytes]:
        """A placement-group bundle takes ``bundle`` from the free resources and offers ``added``
        (its renamed resources) instead; see placement_groups.py."""
        self.reserved[key] = (bundle, added)
        for name, amount in bundle.items():
            self.available[name] = self.available.get(name, 0.0) - amount
        for name, amount in added.items():
            self.available[name] = self.available.get(name, 0.0) + amount
        return self._start_queued()

    def release(self, key: tuple) -> List[bytes]:
        """The bundle is given back (tasks still running in it keep what they hold)."""
        entry = self.reserved.pop(key, None)
        if entry is None:
            return []
        bundle, added = entry
        for name, amount in added.items():
            left = self.available.get(name, 0.0) - amount
            if abs(left) < EPS:
                self.available.pop(name, None)
            else:
                self.available[name] = left
        for name, amount in bundle.items():
            self.available[name] = self.available.get(name, 0.0) + amount
        return self._start_queued()

    def offered(self, name: str) -> float:
        """The amount of ``name`` this rank has, bundles included (for feasibility)."""
        return self.total.get(name, 0.0) + sum(added.get(name, 0.0) for _, added in self.reserved.values())

    def can_ever_fit(self, demand: Dict[str, float]) -> bool:
        if self.reserved:
            return all(self.offered(name) + EPS >= amount for name, amount in demand.items())
        return fits(self.total, demand)

    def fits_now(self, demand: Dict[str, float]) -> bool:
        return not self.queued and fits(self.available, demand)

    def assign(self, task_id: bytes, demand: Dict[str, float]) -> bool:
        """Add a task; True when it starts at once, False when it waits in the queue."""
        if self.fits_now(demand):
            self._start(task_id, demand)
            return True
        self.queued.append((task_id, demand))
        return False

    def finish(self, task_id: bytes) -> List[bytes]:
        """A task ended (or was dropped); return the queued tasks that start now."""
        demand = self.running.pop(task_id, None)
        if demand is None:
            self._drop_queued(task_id)
            if self.on_room is not None:
                self.on_room()
            return []
        if task_id in self.blocked:
            self.blocked.discard(task_id)
            self._give(demand, skip_cpu=True)
        else:
            self._give(demand)
        return self._start_queued()

    def transfer(self, task_id: bytes, holder: bytes, demand: Dict[str, float]) -> List[bytes]:
        """A running task becomes a long-lived holder (an actor) of part of its resources;
        the rest is given back. Returns the queued tasks that start now."""
        old = self.running.pop(task_id, None)
        if old is None:
            return []
        if task_id in self.blocked:
            self.blocked.discard(task_id)
            old = dict(old, CPU=0.0)
        self.running[holder] = demand
        for key, amount in old.items():
            self.available[key] = self.available.get(key, 0.0) + amount - demand.get(key, 0.0)
        return self._start_queued()

    def block(self, task_id: bytes) -> List[bytes]:
        demand = self.running.get(task_id)
        if demand is None or task_id in self.blocked:
            return []
        self.blocked.add(task_id)
        self.available["CPU"] = self.available.get("CPU", 0.0) + demand.get("CPU", 0.0)
        return self._start_queued()

    def unblock(self, task_id: bytes) -> None:
        if task_id in self.blocked:
            self.blocked.discard(task_id)
            cpu = self.running[task_id].get("CPU", 0.0)
            self.available["CPU"] = self.available.get("CPU", 0.0) - cpu

    def load(self) -> int:
        return len(self.running) + len(self.queued)

    def _start(self, task_id: bytes, demand: Dict[str, float]) -> None:
        self.running[task_id] = demand
        for key, amount in demand.items():
            self.available[key] = self.available.get(key, 0.0) - amount

    def _give(self, demand: Dict[str, float], skip_cpu: bool = False) -> None:
        for key, amount in demand.items():
            if skip_cpu and key == "CPU":
                continue
            self.available[key] = self.available.get(key, 0.0) + amount

    def _start_queued(self) -> List[bytes]:
        """After resources came back (every caller): start what fits of the queue, in order."""
        started = []
        while self.queued and fits(self.available, self.queued[0][1]):
            task_id, demand = self.queued.popleft()
            self._start(task_id, demand)
            started.append(task_id)
        if self.on_room is not None:
            self.on_room()
        return started

    def _drop_queued(self, task_id: bytes) -> None:
        for i, (tid, _) in enumerate(self.queued):
            if tid == task_id:
                del self.queued[i]
                return


def usable_cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def host_memory_bytes() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0.0


def host_name(rank: int, ranks_per_host: int) -> str:
    """The host a rank runs on; with HPCRAY_RANKS_PER_HOST, pretend hosts of that many ranks."""
    name = socket.gethostname()
    if ranks_per_host > 0:
        return f"{name}-{rank // ranks_per_host}"
    return name


def node_id_of(host: str) -> str:
    """A host's id as Ray's node id (56 hex digits)."""
    return hashlib.sha1(host.encode()).hexdigest()[:56].ljust(56, "0")


def worker_id_of(rank: int, pid: int) -> str:
    """A rank's process as Ray's worker id (56 hex digits): its rank and pid."""
    return (rank.to_bytes(4, "big") + pid.to_bytes(4, "big")).hex().ljust(56, "0")
