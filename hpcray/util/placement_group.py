"""Placement groups (Ray's ``ray.util.placement_group``): bundles of resources reserved on ranks.

A bundle is reserved on one rank; a "node" is a host, so PACK/STRICT_PACK keep bundles on as
few hosts as possible (one for STRICT_PACK) and SPREAD/STRICT_SPREAD put them on different
ranks/hosts. Tasks and actors go into a group with ``PlacementGroupSchedulingStrategy``.
The mechanism is in ``hpcray/_private/placement_groups.py``.
"""

from __future__ import annotations

import numbers
from typing import Any, Dict, List, Optional

from .._private.ids import BinaryID
from .._private.interrupts import shielded
from .._private.placement import GroupHandle
from .._private.placement_groups import STRATEGIES


class PlacementGroupID(BinaryID):
    """The id of a placement group (``hex()``, ``binary()``)."""

    __slots__ = ()


class PlacementGroup(GroupHandle):
    """A handle to a placement group; it pickles into tasks and actors."""

    def __init__(self, id: PlacementGroupID, bundle_specs: Optional[List[Dict[str, float]]] = None):
        self.id = id
        self._bundles = bundle_specs

    @property
    def bundle_specs(self) -> List[Dict[str, float]]:
        if self._bundles is None:  # a handle from get_current_placement_group(): ask the scheduler
            entry = placement_group_table(self)
            self._bundles = [entry["bundles"][i] for i in sorted(entry["bundles"])] if entry else []
        return [dict(b) for b in self._bundles]

    @property
    def bundle_count(self) -> int:
        return len(self.bundle_specs)

    def _group_id(self) -> bytes:
        return self.id.binary()

    def _bundle_total(self) -> int:
        return self.bundle_count

    def _bundle_list(self) -> List[Dict[str, float]]:
        return self.bundle_specs

    def ready(self):
        """An ObjectRef whose value (this group) is there once every bundle is reserved."""
        from .._private import api
        return api.ensure_session().client.group_ready(self.id.binary(), self)  # (Ray's value: the handle)

    def wait(self, timeout_seconds: float = 30) -> bool:
        """True when the group is placed within ``timeout_seconds``."""
        from .. import wait
        ready, _ = wait([self.ready()], timeout=timeout_seconds)
        return bool(ready)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, PlacementGroup) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"PlacementGroup({self.id.hex()})"

    def __reduce__(self):
        return (PlacementGroup, (self.id, self._bundles))


@shielded
def placement_group(bundles: List[Dict[str, float]], strategy: str = "PACK", name: str = "",
                    lifetime: Optional[str] = None, _max_cpu_fraction_per_node: Optional[float] = None,
                    _soft_target_node_id: Optional[str] = None,
                    bundle_label_selector: Optional[List[Dict[str, str]]] = None) -> PlacementGroup:
    """Reserve ``bundles`` (a list of resource dicts) with ``strategy``; returns at once."""
    from .._private import api
    session = api.ensure_session()
    checked = _check_bundles(bundles)
    if strategy not in STRATEGIES:
        raise ValueError(f"Invalid placement group strategy {strategy!r}; must be one of {list(STRATEGIES)}")
    if not isinstance(name, str):
        raise TypeError(f"placement_group(name={name!r}): name must be a str")
    if lifetime not in (None, "detached"):
        raise ValueError(f"placement_group(lifetime={lifetime!r}): must be None or 'detached'")
    if bundle_label_selector or _soft_target_node_id:
        raise NotImplementedError("bundle_label_selector/_soft_target_node_id: hpcray hosts carry no labels")
    group_id = session.client.create_group(checked, strategy, name)
    return PlacementGroup(PlacementGroupID(group_id), checked)


def _check_bundles(bundles: Any) -> List[Dict[str, float]]:
    if not isinstance(bundles, list) or not bundles:
        raise ValueError(f"placement_group(bundles={bundles!r}): bundles must be a non-empty list of "
                         "resource dicts")
    checked = []
    for bundle in bundles:
        if not isinstance(bundle, dict) or not bundle:
            raise ValueError(f"Bundles cannot be an empty dictionary or not a dict: {bundle!r}")
        if "bundle" in bundle:
            raise ValueError(f"bundle {bundle!r}: 'bundle' is a system-reserved resource name and cannot "
                             "be in a placement group's bundle")
        for key, amount in bundle.items():
            if not isinstance(key, str) or not isinstance(amount, numbers.Real) or isinstance(amount, bool) \
                    or amount < 0:
                raise ValueError(f"bundle {bundle!r}: {key!r}={amount!r} must be a resource name with an "
                                 "amount >= 0")
        if all(amount == 0 for amount in bundle.values()):
            raise ValueError(f"Bundles cannot be an empty dictionary or resources with only 0 values: {bundle!r}")
        checked.append({key: float(amount) for key, amount in bundle.items()})
    return checked


@shielded
def remove_placement_group(placement_group: PlacementGroup) -> None:
    """Give the bundles back; actors in the group are killed, tasks waiting for it fail."""
    from .._private import api
    if not isinstance(placement_group, PlacementGroup):
        raise TypeError(f"remove_placement_group({placement_group!r}): expected a PlacementGroup")
    session = api.ensure_session()
    session.client.remove_group(placement_group.id.binary())


def get_placement_group(placement_group_name: str) -> PlacementGroup:
    """The living group created with this name; ValueError if there is none."""
    from .._private import api
    found = api.query(("placement_group_named", placement_group_name))
    if found is None:
        raise ValueError(f"Failed to look up placement group with name: {placement_group_name}")
    group_id, bundles, _ = found
    return PlacementGroup(PlacementGroupID(group_id), bundles)


def placement_group_table(placement_group: Optional[PlacementGroup] = None) -> Dict[str, Any]:
    """The state of one group (a dict), or of every group (dict by id hex)."""
    from .._private import api
    table = api.query("placement_groups")
    if placement_group is None:
        return table
    return table.get(placement_group.id.hex(), {})


def get_current_placement_group() -> Optional[PlacementGroup]:
    """The group the calling task or actor runs in, or None (also on the driver)."""
    from .._private import context
    ctx = context.current()
    if ctx is None or ctx.group is None:
        return None
    return PlacementGroup(PlacementGroupID(ctx.group.group_id))


__all__ = ["PlacementGroup", "PlacementGroupID", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table", "get_current_placement_group"]
