"""Collective communication among actors (Ray's ``ray.util.collective``), on MPI.

Each member (an actor; the driver or a task may take part too) joins a group with
``init_collective_group``, or the driver declares the group with ``create_collective_group`` and
each actor joins on its first operation. Members on distinct ranks talk over an MPI communicator
of exactly their ranks (put them in a placement group with one bundle each and strategy SPREAD);
members that share a process or a rank still work, through the object store (slower).
Operations work in place on numpy arrays (and torch or CuPy tensors, staged through host memory).
"""

from __future__ import annotations

from typing import Any, List, Optional

from ... import exceptions
from ..._private import api
from ..._private import collective as _core
from ..._private.collective import CollectiveError
from .types import Backend, ReduceOp


def _store(group_name: str, world_size: Optional[int] = None, declared: Optional[dict] = None) -> Any:
    """The group's store actor; made when ``world_size`` is given and none exists."""
    from ... import actor, remote
    try:
        return actor.get_actor(_core.store_name(group_name), namespace=_core.STORE_NAMESPACE)
    except ValueError:
        if world_size is None:
            return None
    return remote(_core.CollectiveStore).options(
        name=_core.store_name(group_name), namespace=_core.STORE_NAMESPACE, num_cpus=0,
        lifetime="detached", get_if_exists=True, max_concurrency=10_000).remote(world_size, declared)


def init_collective_group(world_size: int, rank: int, backend: str = Backend.MPI,
                          group_name: str = "default") -> None:
    """Join ``group_name`` as member ``rank`` of ``world_size``; returns once every member joined
    (an error after ``COLLECTIVE_JOIN_TIMEOUT_S``, 60 s, if some never do)."""
    _core.check_group_args(world_size, rank, backend, group_name)
    _core.join(world_size, rank, group_name, _store(group_name, world_size))


def create_collective_group(actors: List[Any], world_size: int, ranks: List[int],
                            backend: str = Backend.MPI, group_name: str = "default") -> None:
    """From the driver: declare that ``actors[i]`` is member ``ranks[i]`` of ``group_name``.
    Each actor joins on its first collective operation of that group."""
    from ...actor import ActorHandle
    if not isinstance(actors, (list, tuple)) or not all(isinstance(a, ActorHandle) for a in actors):
        raise TypeError("create_collective_group: actors must be a list of actor handles")
    if not isinstance(ranks, (list, tuple)) or len(ranks) != len(actors):
        raise ValueError(f"create_collective_group: ranks must list one rank per actor ({len(actors)})")
    if len(actors) != world_size or sorted(ranks) != list(range(world_size if isinstance(world_size, int) else 0)):
        raise ValueError(f"create_collective_group: ranks {list(ranks)} must be 0..{world_size}-1, one per actor")
    for rank in ranks:
        _core.check_group_args(world_size, rank, backend, group_name)
    if _store(group_name) is not None:
        raise RuntimeError(f"The collective group {group_name!r} already exists")
    declared = {a._actor_id.hex(): r for a, r in zip(actors, ranks)}
    _store(group_name, world_size, declared)


def destroy_collective_group(group_name: str = "default") -> None:
    """In a member: its group ends here; once every member did so, the name can be used again.
    Elsewhere (the driver): the group ends for every member at once; an operation still waiting
    in it raises ``CollectiveError``."""
    from ... import kill
    group = _core.leave(group_name)
    store = group.store if group is not None else _store(group_name)
    if store is None:
        return
    try:
        if group is not None and not api.get(store.leave.remote(group.rank)):
            return  # other members still hold the group
        api.get(store.destroy.remote())
        kill(store)
    except exceptions.RayActorError:
        pass  # the store is gone already (the driver, or the last member, ended the group)


def is_group_initialized(group_name: str = "default") -> bool:
    """Whether this member has joined ``group_name``."""
    return _core.find(group_name) is not None


def get_rank(group_name: str = "default") -> int:
    """This member's rank in ``group_name``, or -1 if it has not joined."""
    group = _core.find(group_name)
    return group.rank if group is not None else -1


def get_collective_group_size(group_name: str = "default") -> int:
    """How many members ``group_name`` has, or -1 if this member has not joined."""
    group = _core.find(group_name)
    return group.world_size if group is not None else -1


def get_group_backend(group_name: str = "default") -> str:
    """How this member's operations of ``group_name`` move data: "mpi" (a communicator of the
    members' ranks) or "store" (through the object store). hpcray only."""
    return _group(group_name).backend


def _group(group_name: str) -> _core.Group:
    group = _core.find(group_name)
    if group is not None:
        return group
    store = _store(group_name)  # declared by create_collective_group: join on first use
    if store is not None:
        from ...runtime_context import get_runtime_context
        world_size, rank = api.get(store.declared_rank.remote(get_runtime_context().get_actor_id()))
        if rank is not None:
            return _core.join(world_size, rank, group_name, store)
    raise RuntimeError(f"The collective group {group_name!r} is not initialized in this process "
                       "(call init_collective_group in each member, or create_collective_group "
                       "from the driver with this actor)")


def _op(op: Any) -> ReduceOp:
    if not isinstance(op, ReduceOp):
        raise TypeError(f"op must be a ReduceOp (SUM, PRODUCT, MIN, MAX), got {op!r}")
    return op


def allreduce(tensor: Any, group_name: str = "default", op: ReduceOp = ReduceOp.SUM) -> None:
    """Reduce ``tensor`` over the members; every member's ``tensor`` receives the result."""
    _core.allreduce(_group(group_name), tensor, _op(op))


def barrier(group_name: str = "default") -> None:
    """Wait until every member reached the barrier."""
    _core.barrier(_group(group_name))


def reduce(tensor: Any, dst_rank: int = 0, group_name: str = "default", op: ReduceOp = ReduceOp.SUM) -> None:
    """Reduce ``tensor`` over the members into member ``dst_rank``'s ``tensor``."""
    _core.reduce(_group(group_name), tensor, dst_rank, _op(op))


def broadcast(tensor: Any, src_rank: int = 0, group_name: str = "default") -> None:
    """Copy member ``src_rank``'s ``tensor`` into every member's ``tensor``."""
    _core.broadcast(_group(group_name), tensor, src_rank)


def allgather(tensor_list: List[Any], tensor: Any, group_name: str = "default") -> None:
    """Every member's ``tensor`` into ``tensor_list`` (one per member, in rank order)."""
    _core.allgather(_group(group_name), tensor_list, tensor)


def reducescatter(tensor: Any, tensor_list: List[Any], group_name: str = "default",
                  op: ReduceOp = ReduceOp.SUM) -> None:
    """Reduce each ``tensor_list[i]`` over the members; member ``i``'s ``tensor`` receives the
    ``i``-th result."""
    _core.reducescatter(_group(group_name), tensor, tensor_list, _op(op))


def send(tensor: Any, dst_rank: int, group_name: str = "default") -> None:
    """Send ``tensor`` to member ``dst_rank`` (which calls ``recv``)."""
    _core.send(_group(group_name), tensor, dst_rank)


def recv(tensor: Any, src_rank: int, group_name: str = "default") -> None:
    """Receive into ``tensor`` what member ``src_rank`` sends."""
    _core.recv(_group(group_name), tensor, src_rank)


__all__ = ["Backend", "CollectiveError", "ReduceOp", "allgather", "allreduce", "barrier", "broadcast",
           "create_collective_group", "destroy_collective_group", "get_collective_group_size",
           "get_group_backend", "get_rank", "init_collective_group", "is_group_initialized", "recv",
           "reduce", "reducescatter", "send"]
