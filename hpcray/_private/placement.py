"""Where a task or actor may run, as the scheduler reads it: small typed values that travel in a
TaskSpec's ``strategy`` slot (None: anywhere, first fit). Made from the public scheduling
strategies by ``remote_function.strategy_key``."""

from __future__ import annotations

from typing import NamedTuple


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
