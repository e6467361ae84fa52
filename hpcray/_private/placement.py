"""Where a task or actor may run, as the scheduler reads it: small typed values that travel in a
TaskSpec's ``strategy`` slot (None: anywhere, first fit), made from a call's options by
``strategy_of``. The public strategy classes and placement groups derive from ``Strategy`` and
``GroupHandle`` below, so this module reads them without importing the public layer."""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Union


class Spread(NamedTuple):
    """``scheduling_strategy="SPREAD"``: round robin over the ranks that fit."""


class OnHost(NamedTuple):
    """``NodeAffinitySchedulingStrategy``: a rank of this host (Ray's node); ``soft``: any rank
    when none of that host can ever fit."""

    node_id: str
    soft: bool


class InGroup(NamedTuple):
    """``PlacementGroupSchedulingStrategy``: a bundle of this placement group (-1: any bundle);
    ``capture``: the tasks it submits go into the group too."""

    group_id: bytes
    bundle_index: int
    capture: bool


Placement = Union[Spread, OnHost, InGroup]


class GroupHandle:
    """Base of the public ``PlacementGroup``: what a strategy needs to know of a group."""

    def _group_id(self) -> bytes:
        raise NotImplementedError

    def _bundle_total(self) -> int:
        raise NotImplementedError

    def _bundle_list(self) -> List[Dict[str, float]]:
        raise NotImplementedError


class Strategy:
    """Base of the public scheduling strategies: each says where it places, as a typed value."""

    def _placement(self) -> Optional[Placement]:
        raise NotImplementedError


def in_group(group: Any, bundle_index: Any, capture: Any) -> Optional[InGroup]:
    """``InGroup`` for a placement group and bundle index (-1: any), checked; None: no group."""
    if group is None:
        return None
    if not isinstance(group, GroupHandle):
        raise TypeError(f"placement_group={group!r}: must be a PlacementGroup from "
                        "hpcray.util.placement_group()")
    count = group._bundle_total()
    if not isinstance(bundle_index, int) or not -1 <= bundle_index < count:
        raise ValueError(f"placement_group_bundle_index={bundle_index!r}: must be -1 or between 0 and "
                         f"{count - 1} (the group has {count} bundles)")
    return InGroup(group._group_id(), bundle_index, bool(capture))


def strategy_of(options: Dict[str, Any]) -> Optional[Placement]:
    """Where a call's options place it (``scheduling_strategy``, or Ray's older
    ``placement_group=`` options); unsupported ones raise here, at the call."""
    if options.get("label_selector") or options.get("fallback_strategy"):
        raise NotImplementedError("label_selector/fallback_strategy: hpcray hosts carry no labels yet")
    legacy = options.get("placement_group", "default")
    if legacy not in ("default", None):
        return in_group(legacy, options.get("placement_group_bundle_index", -1),
                        options.get("placement_group_capture_child_tasks"))
    strategy = options.get("scheduling_strategy")
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return Spread()
    if isinstance(strategy, Strategy):
        return strategy._placement()
    raise ValueError(f"scheduling_strategy={strategy!r} is not supported")


def check_fits_group(options: Dict[str, Any], demand: Dict[str, float], what: str) -> None:
    """Ray's check at the call: a task or actor whose demand fits no bundle of its placement
    group (its bundle, when it names one) is a ValueError there, not a call pending for ever."""
    legacy = options.get("placement_group", "default")
    if legacy not in ("default", None):
        group, index = legacy, options.get("placement_group_bundle_index", -1)
    else:
        strategy = options.get("scheduling_strategy")
        group = getattr(strategy, "placement_group", None)
        index = getattr(strategy, "placement_group_bundle_index", -1)
    if not isinstance(group, GroupHandle):
        return
    bundles = group._bundle_list()
    if not bundles:
        return  # (a handle whose bundles nobody knows: the scheduler decides)
    candidates = bundles if not isinstance(index, int) or index < 0 or index >= len(bundles) else [bundles[index]]
    need = {key: amount for key, amount in demand.items() if amount > 0}
    if not any(all(bundle.get(key, 0.0) >= amount - 1e-9 for key, amount in need.items()) for bundle in candidates):
        raise ValueError(f"Cannot schedule {what} with the placement group because the resource request "
                         f"{need} cannot fit into any bundles for the placement group, {bundles}.")
