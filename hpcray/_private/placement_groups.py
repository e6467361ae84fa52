"""Placement groups: bundles of resources reserved on ranks, as Ray's bundles are on nodes.

    PG_CREATE(id, bundles, strategy) ─► never fits the ranks' totals: a warning, PENDING for good
                                     ─► pending ─(every dispatch: a plan fits the free resources)─►
        for each bundle i on rank r: RankLedger.reserve on the scheduler's picture of r and
        BUNDLE_RESERVE to r (its own ledger does the same) ─► CREATED ─► ready refs get a value
    a task or actor in the group: its demand was renamed at submission (bundle_demand) to the
        bundle resources ``CPU_group_<i>_<id>`` / ``CPU_group_<id>`` and ``bundle_group_*``
        that only the reserving ranks have, so the ordinary placement rule puts it in a bundle
    PG_REMOVE ─► actors in the group are killed, waiting tasks fail, bundles are released
        (BUNDLE_RELEASE); tasks still running in it finish

Strategies over *hosts* (Ray's nodes) and the ranks on them: PACK fills one host if it can, else
as few as it can; STRICT_PACK needs one host; SPREAD puts bundles on different ranks (hosts first)
where it can; STRICT_SPREAD needs a different host per bundle. Mixin of Scheduler.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Tuple

from .. import exceptions
from . import protocol as P
from .placement import InGroup
from .actor_directory import death_value
from .resources import fits

logger = logging.getLogger("hpcray")

PENDING, CREATED, REMOVED = "PENDING", "CREATED", "REMOVED"
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
WILDCARD_AMOUNT = 1000.0  # of bundle_group_*: every task in a bundle takes 0.001 of it
TASK_SHARE = 0.001


def bundle_resources(bundle: Dict[str, float], group_hex: str, index: int) -> Dict[str, float]:
    """What reserving bundle ``index`` adds to its rank (Ray's names)."""
    added: Dict[str, float] = {}
    for key, amount in bundle.items():
        if amount > 0:
            added[f"{key}_group_{index}_{group_hex}"] = amount
            added[f"{key}_group_{group_hex}"] = amount
    added[f"bundle_group_{index}_{group_hex}"] = WILDCARD_AMOUNT
    added[f"bundle_group_{group_hex}"] = WILDCARD_AMOUNT
    return added


def bundle_demand(demand: Dict[str, float], group_hex: str, index: int, wildcard: bool = True) -> Dict[str, float]:
    """A demand renamed so that only bundle ``index`` (-1: any bundle) of the group can meet it."""
    suffix = f"{index}_{group_hex}" if index >= 0 else group_hex
    renamed = {f"{key}_group_{suffix}": amount for key, amount in demand.items() if amount > 0}
    if wildcard:
        renamed[f"bundle_group_{suffix}"] = TASK_SHARE
    return renamed


class GroupRecord:
    __slots__ = ("group_id", "name", "bundles", "strategy", "state", "ranks", "ready_ids", "lost")

    def __init__(self, group_id: bytes, bundles: List[Dict[str, float]], strategy: str, name: str):
        self.group_id = group_id
        self.name = name
        self.bundles = bundles
        self.strategy = strategy
        self.state = PENDING
        self.ranks: List[int] = []
        self.ready_ids: List[tuple] = []  # (object id, value) of ready() refs waiting
        self.lost: List[int] = []  # bundles of a placed group whose rank died (rank_loss.py)


class PlacementGroups:
    """Mixin for Scheduler: needs self.send, self.order, self.ranks, self.objects, self.tasks,
    self.ready, self.actors, self._set_value, self._finish, self._error_value, self.on_kill,
    self._actor_died."""

    def _init_groups(self) -> None:
        self.groups: Dict[bytes, GroupRecord] = {}
        self.group_names: Dict[str, bytes] = {}
        self.pending_groups: List[GroupRecord] = []

    # ---- messages ---------------------------------------------------------------------------
    def on_group_create(self, src: int, group_id: bytes, bundles: List[Dict[str, float]], strategy: str,
                        name: str) -> None:
        group = GroupRecord(group_id, bundles, strategy, name)
        self.groups[group_id] = group
        if name:
            self.group_names[name] = group_id
        if self._plan(group, lambda state: dict(state.ledger.total)) is None:
            # the ranks' totals never change: it stays PENDING (until removed), never retried
            logger.warning("hpcray: placement group %s (%s, bundles %s) cannot be placed on the "
                           "ranks of this job (resources per rank: %s); it stays pending",
                           group_id.hex(), strategy, bundles, sorted({str(s.ledger.total) for s in self.order}))
            return
        self.pending_groups.append(group)
        self.dirty = True

    def on_group_ready(self, src: int, group_id: bytes, object_id: bytes, value) -> None:
        """A ``ready()`` ref: it gets ``value`` (the group's handle) once the group is placed."""
        self.objects[object_id] = self.new_entry(refs=1)  # the caller's hold, as for a task return
        group = self.groups.get(group_id)
        if group is None or group.state == REMOVED:
            self._set_value(object_id, self._group_gone(group_id))
        elif group.state == CREATED:
            self._set_value(object_id, value)
        else:
            group.ready_ids.append((object_id, value))

    def on_group_remove(self, src: int, group_id: bytes) -> None:
        group = self.groups.get(group_id)
        if group is None or group.state == REMOVED:
            return
        was_created = group.state == CREATED
        group.state = REMOVED
        if group in self.pending_groups:
            self.pending_groups.remove(group)
        if group.name and self.group_names.get(group.name) == group_id:
            del self.group_names[group.name]
        for actor in list(self.actors.values()):
            if actor.group == group_id:
                self.on_kill(src, actor.actor_id, True)
        gone = self._group_gone(group_id)
        for queue in self.ready.values():
            for record in list(queue):
                strategy = record.spec.strategy
                if type(strategy) is InGroup and strategy.group_id == group_id and not record.finished:
                    self._finish(record, gone)
        for object_id, _ in group.ready_ids:
            self._set_value(object_id, gone)
        group.ready_ids = []
        if was_created:
            for index, rank in enumerate(group.ranks):
                state = self.ranks.get(rank)
                if state is None:
                    continue  # a bundle whose rank died and that is not placed again yet
                state.ledger.release((group_id, index))
                self.send(rank, (P.BUNDLE_RELEASE, (group_id, index)))
        self.dirty = True

    # ---- placement --------------------------------------------------------------------------
    def place_pending_groups(self) -> None:
        """Reserve every pending group that fits now, oldest first."""
        for group in list(self.pending_groups):
            if group.lost:
                self._place_lost_bundles(group)
                continue
            plan = self._plan(group, lambda state: dict(state.ledger.available))
            if plan is None:
                continue  # it fits the totals: it waits for resources to be given back
            self.pending_groups.remove(group)
            group.ranks = [state.info.rank for state in plan]
            group.state = CREATED
            for index, state in enumerate(plan):
                self._reserve_bundle(group, index, state)
            for object_id, value in group.ready_ids:
                self._set_value(object_id, value)
            group.ready_ids = []

    def _place_lost_bundles(self, group: GroupRecord) -> None:
        """Bundles whose rank died go where they fit now, under the group's strategy: with the
        other bundles' host for STRICT_PACK, on hosts none of them uses for STRICT_SPREAD."""
        kept_hosts = {self.ranks[r].node_id for r in group.ranks if r is not None and r in self.ranks}
        states = self.order
        if group.strategy == "STRICT_PACK" and kept_hosts:
            states = [s for s in states if s.node_id in kept_hosts]
        elif group.strategy == "STRICT_SPREAD":
            states = [s for s in states if s.node_id not in kept_hosts]
        bundles = [group.bundles[i] for i in group.lost]
        plan = _fill(bundles, states, lambda state: dict(state.ledger.available),
                     spread=group.strategy in ("SPREAD", "STRICT_SPREAD"),
                     distinct_hosts=group.strategy == "STRICT_SPREAD")
        if plan is None:
            return  # it waits for room (or ranks) to come back
        self.pending_groups.remove(group)
        for index, state in zip(group.lost, plan):
            self._reserve_bundle(group, index, state)
            group.ranks[index] = state.info.rank
        group.lost = []

    def _reserve_bundle(self, group: GroupRecord, index: int, state) -> None:
        """Bundle ``index`` on ``state``'s rank: on the scheduler's ledger of it and, by
        BUNDLE_RESERVE, on the rank's own."""
        bundle = group.bundles[index]
        added = bundle_resources(bundle, group.group_id.hex(), index)
        state.ledger.reserve((group.group_id, index), bundle, added)
        self.send(state.info.rank, (P.BUNDLE_RESERVE, (group.group_id, index), bundle, added))

    def _plan(self, group: GroupRecord, room_of) -> Optional[List]:
        """A rank for each bundle under the group's strategy, or None."""
        hosts: Dict[str, List] = {}
        for state in self.order:
            hosts.setdefault(state.node_id, []).append(state)
        strategy = group.strategy
        if strategy in ("PACK", "STRICT_PACK"):
            for members in sorted(hosts.values(), key=len, reverse=True):
                plan = _fill(group.bundles, members, room_of, spread=False, distinct_hosts=False)
                if plan is not None:
                    return plan
            if strategy == "STRICT_PACK":
                return None
            return _fill(group.bundles, self.order, room_of, spread=False, distinct_hosts=False)
        if strategy == "STRICT_SPREAD":
            return _fill(group.bundles, self.order, room_of, spread=True, distinct_hosts=True)
        return _fill(group.bundles, self.order, room_of, spread=True, distinct_hosts=False)

    def group_of(self, spec: P.TaskSpec) -> Optional[GroupRecord]:
        strategy = spec.strategy
        if type(strategy) is InGroup:
            return self.groups.get(strategy.group_id)
        return None

    def group_removed(self, spec: P.TaskSpec) -> bool:
        group = self.groups.get(spec.strategy.group_id)
        return group is None or group.state == REMOVED

    def fail_outside_group(self, record) -> None:
        """A task or actor whose group is gone: it fails (an actor dies) instead of waiting."""
        gone = self._group_gone(record.spec.strategy.group_id)
        if record.spec.kind == P.ACTOR_CREATE:
            actor = self.actors.get(record.spec.actor_id)
            if actor is not None and actor.state != "DEAD":
                gone = death_value(actor, f"The actor {actor.class_name} was created in placement group "
                                          f"{record.spec.strategy.group_id.hex()}, which was removed")
                self._actor_died(actor, gone)
        self._finish(record, gone)

    def group_candidates(self, spec: P.TaskSpec) -> List:
        group = self.group_of(spec)
        if group is None or group.state != CREATED:
            return []
        index = spec.strategy.bundle_index
        ranks = group.ranks if index < 0 else [group.ranks[index]]
        return [self.ranks[r] for r in dict.fromkeys(ranks) if r in self.ranks]

    def _group_gone(self, group_id: bytes):
        return self._error_value(exceptions.RaySystemError(
            f"The placement group {group_id.hex()} was removed (or never existed in this session)"))

    # ---- views -----------------------------------------------------------------------------
    def groups_view(self) -> Dict[str, dict]:
        table = {}
        for group in self.groups.values():
            table[group.group_id.hex()] = {
                "placement_group_id": group.group_id.hex(), "name": group.name,
                "bundles": {i: dict(b) for i, b in enumerate(group.bundles)},
                "bundles_to_node_id": {i: self.ranks[r].node_id for i, r in enumerate(group.ranks)
                                       if r in self.ranks},
                "bundles_to_rank": dict(enumerate(group.ranks)),
                "strategy": group.strategy, "state": group.state,
            }
        return table

    def group_named(self, name: str) -> Optional[Tuple[bytes, List[Dict[str, float]], str]]:
        group_id = self.group_names.get(name)
        if group_id is None:
            return None
        group = self.groups[group_id]
        return group_id, group.bundles, group.strategy


def _fill(bundles: List[Dict[str, float]], states: List, room_of, spread: bool, distinct_hosts: bool) -> Optional[List]:
    """Greedy: each bundle to a rank with room left after the bundles placed before it.
    ``spread`` prefers the rank (and host) with the fewest bundles of this group so far."""
    room = {id(s): room_of(s) for s in states}
    count: Dict[int, int] = {}
    used_hosts: Dict[str, int] = {}
    plan = []
    for bundle in bundles:
        choices = [s for s in states if fits(room[id(s)], bundle)
                   and not (distinct_hosts and s.node_id in used_hosts)]
        if not choices:
            return None
        if spread:
            choices.sort(key=lambda s: (used_hosts.get(s.node_id, 0), count.get(id(s), 0)))
        state = choices[0]
        for key, amount in bundle.items():
            room[id(state)][key] = room[id(state)].get(key, 0.0) - amount
        count[id(state)] = count.get(id(state), 0) + 1
        used_hosts[state.node_id] = used_hosts.get(state.node_id, 0) + 1
        plan.append(state)
    return plan
