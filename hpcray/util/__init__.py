"""Utilities (Ray's ``ray.util``): ActorPool, named actors, scheduling strategies, queue."""

from typing import Dict, List, Union

from ..runtime_context import get_runtime_context  # noqa: F401
from . import accelerators  # noqa: F401
from . import scheduling_strategies  # noqa: F401
from . import state  # noqa: F401
from .actor_pool import ActorPool
from .placement_group import (PlacementGroup, get_current_placement_group, get_placement_group,  # noqa: F401
                              placement_group, placement_group_table, remove_placement_group)


def get_node_ip_address() -> str:
    """The IP address of this host."""
    from .._private.executor import host_address
    return host_address()


def list_named_actors(all_namespaces: bool = False) -> List[Union[str, Dict[str, str]]]:
    """Names of the living named actors of the current namespace; with ``all_namespaces``,
    dicts with ``name`` and ``namespace`` for every namespace."""
    from .._private import api
    session = api.ensure_session()
    pairs = api.query("named_actors")
    if all_namespaces:
        return [{"name": name, "namespace": ns} for ns, name in pairs]
    return [name for ns, name in pairs if ns == session.namespace]


__all__ = ["ActorPool", "accelerators", "get_node_ip_address", "list_named_actors", "scheduling_strategies", "state",
           "get_runtime_context", "PlacementGroup", "placement_group", "remove_placement_group",
           "get_placement_group", "placement_group_table", "get_current_placement_group"]
