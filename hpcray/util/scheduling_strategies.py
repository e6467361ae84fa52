"""Scheduling strategies (Ray's ``ray.util.scheduling_strategies``).

A "node" is a host: ``NodeAffinitySchedulingStrategy(node_id)`` runs on a rank of that host.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from .._private.placement import OnHost, Placement, Strategy, in_group


class PlacementGroupSchedulingStrategy(Strategy):
    """Run in a bundle of a placement group (-1: any bundle)."""

    def __init__(self, placement_group: Any, placement_group_bundle_index: int = -1,
                 placement_group_capture_child_tasks: Optional[bool] = None):
        self.placement_group = placement_group
        self.placement_group_bundle_index = placement_group_bundle_index
        self.placement_group_capture_child_tasks = placement_group_capture_child_tasks

    def _placement(self) -> Optional[Placement]:
        return in_group(self.placement_group, self.placement_group_bundle_index,
                        self.placement_group_capture_child_tasks)


class NodeAffinitySchedulingStrategy(Strategy):
    """Run on the host ``node_id``; ``soft=True`` falls back to any host when it cannot."""

    def __init__(self, node_id: str, soft: bool, _spill_on_unavailable: bool = False,
                 _fail_on_unavailable: bool = False):
        if not isinstance(node_id, str):
            raise TypeError(f"NodeAffinitySchedulingStrategy: node_id must be a hex string, got {node_id!r}")
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def _placement(self) -> Optional[Placement]:
        return OnHost(self.node_id, bool(self.soft))


class In:
    def __init__(self, *values: str):
        self.values = list(values)


class NotIn:
    def __init__(self, *values: str):
        self.values = list(values)


class Exists:
    pass


class DoesNotExist:
    pass


class NodeLabelSchedulingStrategy(Strategy):
    """Run on a node whose labels match (hpcray hosts carry no labels: see the README)."""

    def __init__(self, hard: Dict[str, Any], *, soft: Optional[Dict[str, Any]] = None):
        self.hard = hard
        self.soft = soft

    def _placement(self) -> Optional[Placement]:
        raise NotImplementedError("NodeLabelSchedulingStrategy: hpcray hosts carry no labels yet")


__all__ = ["PlacementGroupSchedulingStrategy", "NodeAffinitySchedulingStrategy",
           "NodeLabelSchedulingStrategy", "In", "NotIn", "Exists", "DoesNotExist"]
