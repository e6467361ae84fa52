"""Collective groups among actors, the core of ``hpcray.util.collective``.

    init_collective_group(world_size, rank, name) in each member (or create_collective_group
    from the driver, after which each member joins on its first operation)
        └─► the group's store: an async named actor (0 CPUs) that answers every member's join
            once ``world_size`` members joined, with their MPI ranks in collective order
    members on distinct ranks, an MPI with MPI_THREAD_MULTIPLE ─► MpiGroup: a communicator of
        exactly those ranks (Create_group over the job's communicator: only the members take
        part); each operation is a non-blocking MPI collective that the member's own thread
        drives to completion (the rank's loop and its other actors go on meanwhile)
    otherwise (one process, members sharing a rank) ─► StoreGroup: the store gathers each
        operation's contributions and hands every member all of them (slower: values travel
        as objects)

Every operation first checks that the members agree on what they do (operation, shape,
dtype, root): a mismatch is an error on every member, never a hang or a wrong result. A group
is local to its member (an actor, or the driver or a task outside actors): the registry is
keyed by (member, name).
"""

from __future__ import annotations

import asyncio
import enum
import os
import threading
import time
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .. import exceptions
from . import context
from .config import COLLECTIVE_CHECK_S, COLLECTIVE_JOIN_TIMEOUT_S, COLLECTIVE_SPIN_S

STORE_NAMESPACE = "_hpcray_collective"
BACKENDS = ("mpi", "nccl", "gloo", "torch_gloo")  # all of them run on MPI here


class ReduceOp(enum.Enum):
    """Ray's reduce operations."""
    SUM = 0
    PRODUCT = 1
    MIN = 2
    MAX = 3


_NUMPY_OPS = {ReduceOp.SUM: np.add, ReduceOp.PRODUCT: np.multiply, ReduceOp.MIN: np.minimum,
              ReduceOp.MAX: np.maximum}


class CollectiveError(RuntimeError):
    """A collective operation could not complete (members disagree, the group was destroyed)."""


# ---- the store: rendezvous, and the data path of members that share a process --------------
class CollectiveStore:
    """One per group (an async actor). ``join`` waits until every member joined; ``exchange``
    waits until every member contributed to operation ``seq`` and returns all contributions."""

    def __init__(self, world_size: int, declared: Optional[Dict[str, int]] = None):
        self.world_size = world_size
        self.declared = declared or {}  # actor id (hex) -> rank, from create_collective_group
        self.joined: Dict[int, int] = {}
        self.everyone = asyncio.Event()
        self.rounds: Dict[int, list] = {}  # seq -> [contributions by rank, event, members done]
        self.mail: Dict[tuple, list] = {}  # (src, dst, n) -> [value, event]: send/recv
        self.left: set = set()  # members that destroyed their group
        self.destroyed = False

    def declared_rank(self, actor_id: Optional[str]) -> Tuple[int, Optional[int]]:
        """(world size, the rank create_collective_group gave this actor, or None)."""
        return self.world_size, self.declared.get(actor_id)

    def is_destroyed(self) -> bool:
        return self.destroyed

    # (errors are answers, not exceptions: the member raises them as its own, of the right type)
    async def join(self, world_size: int, rank: int, mpi_rank: int, timeout_s: float) -> Any:
        if world_size != self.world_size:
            return ValueError(f"world_size={world_size} differs from the group's {self.world_size}")
        if rank in self.joined:
            return ValueError(f"rank {rank} already joined this collective group")
        self.joined[rank] = mpi_rank
        if len(self.joined) == self.world_size:
            self.everyone.set()
        try:
            await asyncio.wait_for(self.everyone.wait(), timeout_s)
        except asyncio.TimeoutError:
            self.joined.pop(rank, None)
            missing = sorted(set(range(self.world_size)) - set(self.joined) - {rank})
            return TimeoutError(f"ranks {missing} of the collective group did not join within "
                                f"{timeout_s:g} s")
        if self.destroyed:
            return CollectiveError("the collective group was destroyed")
        return [self.joined[r] for r in range(self.world_size)]

    async def exchange(self, seq: int, rank: int, signature: tuple, value: Any) -> Any:
        entry = self.rounds.get(seq)
        if entry is None:
            entry = self.rounds[seq] = [{}, asyncio.Event(), 0]
        entry[0][rank] = (signature, value)
        if len(entry[0]) == self.world_size:
            entry[1].set()
        await entry[1].wait()
        if self.destroyed:
            return CollectiveError("the collective group was destroyed while this operation waited")
        entry[2] += 1
        if entry[2] == self.world_size:
            del self.rounds[seq]
        contributions = [entry[0][r] for r in range(self.world_size)]
        if len({s for s, _ in contributions}) > 1:
            return CollectiveError(_mismatch([s for s, _ in contributions]))
        return [v for _, v in contributions]

    def post(self, src: int, dst: int, n: int, value: Any) -> None:
        """The ``n``-th send from ``src`` to ``dst``."""
        entry = self.mail.setdefault((src, dst, n), [None, asyncio.Event()])
        entry[0] = value
        entry[1].set()

    async def fetch(self, src: int, dst: int, n: int) -> Any:
        """The ``n``-th value ``src`` sent to ``dst``, once it is there."""
        entry = self.mail.setdefault((src, dst, n), [None, asyncio.Event()])
        await entry[1].wait()
        if self.destroyed:
            return CollectiveError("the collective group was destroyed while recv waited")
        del self.mail[(src, dst, n)]
        return entry[0]

    def leave(self, rank: int) -> bool:
        """Member ``rank`` destroyed its group; True when every member has (the store can go)."""
        self.left.add(rank)
        return len(self.left) >= self.world_size

    def destroy(self) -> None:
        self.destroyed = True
        self.everyone.set()
        for entry in list(self.rounds.values()) + list(self.mail.values()):
            entry[1].set()


def answer(value: Any) -> Any:
    """A store's answer; an error it answered is raised here, in the member."""
    if isinstance(value, BaseException):
        raise value
    return value


def _mismatch(signatures: List[tuple]) -> str:
    shown = "; ".join(f"rank {r}: {s[0]} {s[1]} {s[2]}" + (f" root {s[3]}" if s[3] >= 0 else "")
                      for r, s in enumerate(signatures))
    return f"the members of the collective group disagree on the operation ({shown})"


def store_name(group_name: str) -> str:
    """The store actor's name (in the namespace ``STORE_NAMESPACE``)."""
    return f"collective:{group_name}"


# ---- a member's groups --------------------------------------------------------------------
class Group:
    """A member's view of one group: its rank, size, the store, and how data moves."""

    backend = "store"

    def __init__(self, name: str, world_size: int, rank: int, store: Any):
        self.name = name
        self.world_size = world_size
        self.rank = rank
        self.store = store
        self.seq = 0
        self.sent: Dict[int, int] = {}  # peer -> sends to it so far (send/recv pairs in order)
        self.received: Dict[int, int] = {}
        self.destroyed = False

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def close(self) -> None:
        self.destroyed = True


class StoreGroup(Group):
    """Members in one process, or sharing a rank: each operation is an exchange in the store."""

    def exchange(self, signature: tuple, value: Any) -> List[Any]:
        if self.destroyed:
            raise CollectiveError(f"the collective group {self.name!r} was destroyed")
        return self.ask(self.store.exchange.remote(self.next_seq(), self.rank, signature, value))

    def ask(self, ref: Any) -> Any:
        """The store's answer to a call; a store killed meanwhile (the group destroyed from the
        driver) is a CollectiveError too."""
        from . import api
        try:
            return answer(api.get(ref))
        except exceptions.RayActorError:
            raise CollectiveError(f"the collective group {self.name!r} was destroyed (its store is "
                                  "gone)") from None


class MpiGroup(Group):
    """Members on distinct ranks: a communicator of exactly those ranks."""

    backend = "mpi"

    def __init__(self, name: str, world_size: int, rank: int, store: Any, comm: Any):
        super().__init__(name, world_size, rank, store)
        self.comm = comm

    def wait(self, requests: List[Any], what: str, statuses: Optional[List[Any]] = None) -> None:
        """Drive non-blocking operations to completion on this thread: poll without sleeping for
        ``COLLECTIVE_SPIN_S`` (MPI moves data only while polled), then with sleeps up to 1 ms;
        fail when the group is destroyed meanwhile (locally, or in the store), or MPI fails."""
        from mpi4py import MPI
        started = time.monotonic()
        check_at = started + COLLECTIVE_CHECK_S
        asked = None
        delay = 1e-5
        while True:
            try:
                if MPI.Request.Testall(requests, statuses):
                    return
            except MPI.Exception as exc:
                raise CollectiveError(f"{what} in the collective group {self.name!r}: "
                                      f"{self._why(exc)}") from None
            if self.destroyed:
                raise CollectiveError(f"the collective group {self.name!r} was destroyed while {what} waited")
            now = time.monotonic()
            if now >= check_at:
                asked = self._store_destroyed(asked)
                check_at = now + COLLECTIVE_CHECK_S
            if now - started < COLLECTIVE_SPIN_S:
                # (Testall releases the GIL; the yield lets a peer sharing this core run, as
                # MPICH's blocking waits do)
                os.sched_yield()
            else:
                time.sleep(delay)
                delay = min(delay * 2, 1e-3)

    def _why(self, exc: Any) -> str:
        """An MPI error in words: which members died (ULFM), else MPI's own string."""
        from mpi4py import MPI
        try:
            failed = self.comm.Get_failed()
            group = self.comm.Get_group()
            dead = MPI.Group.Translate_ranks(failed, list(range(failed.Get_size())), group)
            failed.Free()
            group.Free()
        except Exception:  # an MPI without fault tolerance
            dead = []
        if dead:
            return f"member(s) {sorted(dead)} of the group died"
        return exc.Get_error_string()

    def _store_destroyed(self, asked: Any) -> Any:
        from . import api
        if asked is None:
            return self.store.is_destroyed.remote()
        ready, _ = api.wait([asked], num_returns=1, timeout=0)
        if ready:
            try:
                self.destroyed = bool(api.get(asked))
            except Exception:  # the store is gone: destroy_collective_group killed it
                self.destroyed = True
            return None
        return asked

    def agree(self, signature: tuple, what: str) -> None:
        """Every member does the same operation on the same shape and dtype (else every member
        raises): one small allreduce of the signature's hash, and of its negation."""
        from mpi4py import MPI
        code = zlib.crc32(repr(signature).encode()) & 0x3FFFFFFF
        seen = np.array([code, -code], dtype=np.int64)
        self.wait([self.comm.Iallreduce(MPI.IN_PLACE, seen, op=MPI.MIN)], what)
        if seen[0] != -seen[1]:
            raise CollectiveError(f"the members of the collective group {self.name!r} disagree on "
                                  f"{what} (this member: {signature[0]} of shape {signature[1]}, "
                                  f"dtype {signature[2]}; shapes, dtypes and roots must match)")

    def close(self) -> None:
        super().close()
        try:
            self.comm.Free()
        except Exception:  # a communicator with an operation still pending: left to MPI_Finalize
            pass


_groups: Dict[Tuple[Optional[str], str], Group] = {}
_groups_lock = threading.Lock()


def member_key(group_name: str) -> Tuple[Optional[str], str]:
    """Groups belong to the actor (or, outside actors, the process) that joined them."""
    ctx = context.current()
    actor_id = ctx.actor_id.hex() if ctx is not None and ctx.actor_id else None
    return actor_id, group_name


def find(group_name: str) -> Optional[Group]:
    return _groups.get(member_key(group_name))


def join(world_size: int, rank: int, group_name: str, store: Any) -> Group:
    """This member joins ``group_name`` through its ``store`` (every member must; waits for the
    others, at most ``COLLECTIVE_JOIN_TIMEOUT_S``)."""
    from . import api
    key = member_key(group_name)
    with _groups_lock:
        if key in _groups:
            raise RuntimeError(f"The collective group {group_name!r} is already initialized here")
    session = api.ensure_session()
    members = answer(api.get(store.join.remote(world_size, rank, session.rank, COLLECTIVE_JOIN_TIMEOUT_S)))
    transport = session.loop.transport  # (None with one process)
    comm = transport.comm if transport is not None else None
    if comm is not None and len(set(members)) == world_size and _thread_multiple():
        group: Group = MpiGroup(group_name, world_size, rank, store, _communicator(comm, members, group_name))
    else:
        group = StoreGroup(group_name, world_size, rank, store)
    with _groups_lock:
        _groups[key] = group
    return group


def _thread_multiple() -> bool:
    from mpi4py import MPI
    return MPI.Query_thread() == MPI.THREAD_MULTIPLE


def _communicator(comm: Any, members: List[int], group_name: str) -> Any:
    """A communicator of the members' ranks in collective order; only they take part."""
    from mpi4py import MPI
    world_group = comm.Get_group()
    members_group = world_group.Incl(members)
    try:
        tag = zlib.crc32(group_name.encode()) % 32768
        made = comm.Create_group(members_group, tag)
    finally:
        members_group.Free()
        world_group.Free()
    made.Set_errhandler(MPI.ERRORS_RETURN)  # a mistake is an exception here, not the job's end
    return made


def leave(group_name: str) -> Optional[Group]:
    """This member's group ``group_name`` ends here (its communicator is freed); returns it."""
    with _groups_lock:
        group = _groups.pop(member_key(group_name), None)
    if group is not None:
        group.close()
    return group


def check_group_args(world_size: Any, rank: Any, backend: Any, group_name: Any) -> None:
    if not isinstance(world_size, int) or isinstance(world_size, bool) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    if not isinstance(group_name, str) or not group_name:
        raise ValueError(f"group_name must be a non-empty str, got {group_name!r}")
    name = getattr(backend, "value", backend)
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not supported; use one of {BACKENDS} (all run on MPI)")


# ---- tensors: numpy arrays, and torch/CuPy tensors staged through host memory ---------------
def host_view(tensor: Any) -> Tuple[np.ndarray, Callable[[], None]]:
    """A contiguous numpy array to operate on, and what writes it back into ``tensor``."""
    if isinstance(tensor, np.ndarray):
        if tensor.flags.c_contiguous and tensor.flags.writeable:
            return tensor, lambda: None
        if not tensor.flags.writeable:
            raise ValueError("a collective operates in place: the array must be writeable")
        staged = np.ascontiguousarray(tensor)
        return staged, lambda: np.copyto(tensor, staged)
    module = type(tensor).__module__.split(".")[0]
    if module == "torch":
        if tensor.device.type == "cpu" and tensor.is_contiguous():
            return tensor.numpy(), lambda: None
        # a GPU tensor, or a strided one: a contiguous host copy, written back on its device
        staged = tensor.detach().cpu().contiguous().numpy()
        return staged, lambda: tensor.copy_(tensor.new_tensor(staged))
    if module == "cupy":
        staged = tensor.get()  # device to host (CuPy's ndarray.get), host to device with set
        return staged, lambda: tensor.set(staged)
    raise TypeError(f"a collective operates on numpy arrays (or torch/CuPy tensors), not {type(tensor).__name__}")


def signature(what: str, array: np.ndarray, root: int = -1) -> tuple:
    return (what, array.shape, array.dtype.str, root)  # (dtype.str: str(dtype) costs 7 µs)


# ---- the operations -----------------------------------------------------------------------
SENDRECV_TAG = 1  # the group's communicator carries only its own members' send/recv


_MPI_OPS: Dict[ReduceOp, Any] = {}


def _mpi_op(op: ReduceOp) -> Any:
    if not _MPI_OPS:
        from mpi4py import MPI
        _MPI_OPS.update({ReduceOp.SUM: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN,
                         ReduceOp.MAX: MPI.MAX})
    return _MPI_OPS[op]


def _reduce_all(values: List[np.ndarray], op: ReduceOp) -> np.ndarray:
    result = np.array(values[0], copy=True)
    for value in values[1:]:
        _NUMPY_OPS[op](result, value, out=result)
    return result


def allreduce(group: Group, tensor: Any, op: ReduceOp) -> None:
    array, write_back = host_view(tensor)
    sig = signature(f"allreduce {op.name}", array)
    if isinstance(group, MpiGroup):
        from mpi4py import MPI
        group.agree(sig, "allreduce")
        group.wait([group.comm.Iallreduce(MPI.IN_PLACE, array, op=_mpi_op(op))], "allreduce")
    else:
        np.copyto(array, _reduce_all(group.exchange(sig, array), op))
    write_back()


def barrier(group: Group) -> None:
    if isinstance(group, MpiGroup):
        group.wait([group.comm.Ibarrier()], "barrier")
    else:
        group.exchange(("barrier", (), "", -1), None)


def broadcast(group: Group, tensor: Any, src_rank: int) -> None:
    _check_peer(group, src_rank, "src_rank")
    array, write_back = host_view(tensor)
    sig = signature("broadcast", array, src_rank)
    if isinstance(group, MpiGroup):
        group.agree(sig, "broadcast")
        group.wait([group.comm.Ibcast(array, root=src_rank)], "broadcast")
    else:
        values = group.exchange(sig, array if group.rank == src_rank else None)
        np.copyto(array, values[src_rank])
    write_back()


def allgather(group: Group, tensor_list: List[Any], tensor: Any) -> None:
    _check_list(group, tensor_list, "allgather")
    array, _ = host_view(tensor)
    outputs = _views_like(tensor_list, array, "allgather")
    sig = signature("allgather", array)
    if isinstance(group, MpiGroup):
        group.agree(sig, "allgather")
        gathered = np.empty((group.world_size,) + array.shape, dtype=array.dtype)
        group.wait([group.comm.Iallgather(array, gathered)], "allgather")
        values: List[np.ndarray] = list(gathered)
    else:
        values = group.exchange(sig, array)
    for (out, write_back), value in zip(outputs, values):
        np.copyto(out, value)
        write_back()


def reduce(group: Group, tensor: Any, dst_rank: int, op: ReduceOp) -> None:
    _check_peer(group, dst_rank, "dst_rank")
    array, write_back = host_view(tensor)
    sig = signature(f"reduce {op.name}", array, dst_rank)
    if isinstance(group, MpiGroup):
        from mpi4py import MPI
        group.agree(sig, "reduce")
        if group.rank == dst_rank:
            request = group.comm.Ireduce(MPI.IN_PLACE, array, op=_mpi_op(op), root=dst_rank)
        else:
            request = group.comm.Ireduce(array, None, op=_mpi_op(op), root=dst_rank)
        group.wait([request], "reduce")
    else:
        values = group.exchange(sig, array)
        if group.rank == dst_rank:
            np.copyto(array, _reduce_all(values, op))
    write_back()


def reducescatter(group: Group, tensor: Any, tensor_list: List[Any], op: ReduceOp) -> None:
    _check_list(group, tensor_list, "reducescatter")
    array, write_back = host_view(tensor)
    inputs = [view for view, _ in _views_like(tensor_list, array, "reducescatter")]
    sig = signature(f"reducescatter {op.name}", array)
    if isinstance(group, MpiGroup):
        group.agree(sig, "reducescatter")
        stacked = np.ascontiguousarray(np.stack(inputs))
        group.wait([group.comm.Ireduce_scatter_block(stacked, array, op=_mpi_op(op))], "reducescatter")
    else:
        values = group.exchange(sig, np.stack(inputs))
        np.copyto(array, _reduce_all([v[group.rank] for v in values], op))
    write_back()


def send(group: Group, tensor: Any, dst_rank: int) -> None:
    _check_peer(group, dst_rank, "dst_rank", distinct=True)
    array, _ = host_view(tensor)
    if isinstance(group, MpiGroup):
        group.wait([group.comm.Isend(array, dst_rank, SENDRECV_TAG)], "send")
        return
    n = group.sent[dst_rank] = group.sent.get(dst_rank, 0) + 1
    group.ask(group.store.post.remote(group.rank, dst_rank, n, array))


def recv(group: Group, tensor: Any, src_rank: int) -> None:
    _check_peer(group, src_rank, "src_rank", distinct=True)
    array, write_back = host_view(tensor)
    if isinstance(group, MpiGroup):
        from mpi4py import MPI
        status = MPI.Status()
        try:
            group.wait([group.comm.Irecv(array, src_rank, SENDRECV_TAG)], "recv", [status])
        except CollectiveError as exc:  # a larger message than the tensor (MPI_ERR_TRUNCATE)
            raise CollectiveError(f"{exc} (from rank {src_rank}, for a tensor of {array.shape} "
                                  f"{array.dtype})") from None
        if status.Get_count(MPI.BYTE) != array.nbytes:
            raise CollectiveError(f"recv from rank {src_rank}: {status.Get_count(MPI.BYTE)} bytes "
                                  f"arrived for a tensor of {array.nbytes} ({array.shape} {array.dtype})")
    else:
        n = group.received[src_rank] = group.received.get(src_rank, 0) + 1
        value = group.ask(group.store.fetch.remote(src_rank, group.rank, n))
        if value.shape != array.shape or value.dtype != array.dtype:
            raise CollectiveError(f"recv from rank {src_rank}: a tensor of {value.shape} {value.dtype} "
                                  f"arrived for one of {array.shape} {array.dtype}")
        np.copyto(array, value)
    write_back()


def _check_list(group: Group, tensor_list: Any, what: str) -> None:
    if not isinstance(tensor_list, list) or len(tensor_list) != group.world_size:
        raise ValueError(f"{what}: tensor_list must be a list of {group.world_size} tensors (one per member)")


def _views_like(tensor_list: List[Any], array: np.ndarray, what: str) -> List[Tuple[np.ndarray, Callable[[], None]]]:
    """``host_view`` of each tensor of ``tensor_list``, each like ``array``."""
    views = [host_view(t) for t in tensor_list]
    for view, _ in views:
        if view.shape != array.shape or view.dtype != array.dtype:
            raise ValueError(f"{what}: every tensor of tensor_list must be like tensor "
                             f"({array.shape} {array.dtype}), got {view.shape} {view.dtype}")
    return views


def _check_peer(group: Group, rank: Any, name: str, distinct: bool = False) -> None:
    if not isinstance(rank, int) or isinstance(rank, bool) or not 0 <= rank < group.world_size:
        raise ValueError(f"{name} must be a rank of the group, in [0, {group.world_size}), got {rank!r}")
    if distinct and rank == group.rank:
        raise ValueError(f"{name}={rank} is this member's own rank")
