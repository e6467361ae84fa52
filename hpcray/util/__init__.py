"""Utilities (Ray's ``ray.util``)."""

from ..runtime_context import get_runtime_context  # noqa: F401
from . import scheduling_strategies  # noqa: F401


def get_node_ip_address() -> str:
    """The IP address of this host."""
    from .._private.executor import host_address
    return host_address()


__all__ = ["get_node_ip_address", "scheduling_strategies"]
