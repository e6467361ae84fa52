"""hpcray.util.collective: Ray's collective API among actors, on an MPI communicator of the
members' ranks when they sit on distinct ranks, through the object store otherwise (one process,
members sharing a rank). Each case checks which of the two ran, by the rule."""

import time

import numpy as np

import hpcray as ray
from hpcray.util import collective as col
from hpcray.util.placement_group import placement_group, remove_placement_group
from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .helpers import CaseSkipped, raises

ENV = {"HPCRAY_NUM_CPUS": "4"}  # per worker rank under MPI; the process's CPUs on a single rank


class _Device:
    type = "cuda"


class FakeCudaTensor:
    """A torch tensor on a pretend GPU: its data is reached only through torch's calls that move
    it (``.cpu()``, ``copy_``, ``new_tensor``), as a CUDA tensor's is; ``moves`` counts them."""
    device = _Device()

    def __init__(self, data):
        self.data = np.array(data)  # "device memory"
        self.moves = 0

    def detach(self):
        return self

    def cpu(self):
        self.moves += 1
        return _HostTensor(self.data.copy())

    def is_contiguous(self):
        return True

    def new_tensor(self, array):
        self.moves += 1
        return FakeCudaTensor(array)

    def copy_(self, other):
        self.data[...] = other.data
        return self


class _Cpu:
    type = "cpu"


class FakeCpuTensor(FakeCudaTensor):
    """A contiguous torch tensor on the CPU: reduced in place through the numpy view that shares
    its memory, with no copy."""
    device = _Cpu()

    def numpy(self):
        return self.data


class _HostTensor:
    def __init__(self, data):
        self.data = data

    def contiguous(self):
        return self

    def numpy(self):
        return self.data


class FakeCupyArray:
    """A CuPy array on a pretend GPU: ``get()`` copies it to the host, ``set()`` back."""

    def __init__(self, data):
        self.device_data = np.array(data)

    def get(self):
        return self.device_data.copy()

    def set(self, host):
        self.device_data[...] = host


FakeCudaTensor.__module__ = FakeCpuTensor.__module__ = "torch"  # how hpcray tells torch and CuPy tensors apart
FakeCupyArray.__module__ = "cupy.ndarray"


@ray.remote(num_cpus=1)
class Member:
    def __init__(self, rank, size):
        self.rank, self.size = rank, size

    def where(self):
        return ray.get_runtime_context().get_rank()

    def join(self, name):
        col.init_collective_group(self.size, self.rank, backend="mpi", group_name=name)
        return col.get_group_backend(name), col.get_rank(name), col.get_collective_group_size(name)

    def every_operation(self, name):
        r, n = self.rank, self.size
        out = {}
        a = np.full(4, r + 1.0)
        col.allreduce(a, name)
        out["sum"] = a.tolist()
        for op in (col.ReduceOp.PRODUCT, col.ReduceOp.MIN, col.ReduceOp.MAX):
            b = np.full(2, r + 2, dtype=np.int64)
            col.allreduce(b, name, op=op)
            out[op.name] = b.tolist()
        c = np.arange(3.0) * 7 if r == n - 1 else np.zeros(3)
        col.broadcast(c, n - 1, name)
        out["broadcast"] = c.tolist()
        gathered = [np.zeros(2, dtype=np.int32) for _ in range(n)]
        col.allgather(gathered, np.full(2, 10 * r, dtype=np.int32), name)
        out["allgather"] = [g.tolist() for g in gathered]
        d = np.full(2, r + 1.0)
        col.reduce(d, 0, name)
        out["reduce"] = d.tolist()
        e = np.zeros(3)
        col.reducescatter(e, [np.full(3, 100.0 * i + r) for i in range(n)], name)
        out["reducescatter"] = e.tolist()
        col.barrier(name)
        if n > 1:  # a ring: each sends to the next and receives from the one before
            if r % 2 == 0:
                col.send(np.full(2, float(r)), (r + 1) % n, name)
                f = np.zeros(2)
                col.recv(f, (r - 1) % n, name)
            else:
                f = np.zeros(2)
                col.recv(f, (r - 1) % n, name)
                col.send(np.full(2, float(r)), (r + 1) % n, name)
            out["received"] = f.tolist()
        return out

    def allreduce(self, name, length):
        a = np.full(length, float(self.rank + 1))
        try:
            col.allreduce(a, name)
            return a.tolist()
        except col.CollectiveError as exc:
            return f"CollectiveError: {exc}"

    def recv_into(self, name, length):
        try:
            f = np.zeros(length)
            col.recv(f, 0, name)
            return f.tolist()
        except col.CollectiveError as exc:
            return f"CollectiveError: {exc}"

    def send(self, name, length):
        try:
            col.send(np.ones(length), 1, name)
            return "sent"
        except col.CollectiveError as exc:
            return f"CollectiveError: {exc}"

    def call(self, what, *args, **kwargs):
        """Run a collective function here; its error as (type name, message)."""
        try:
            return getattr(col, what)(*args, **kwargs)
        except Exception as exc:
            return type(exc).__name__, str(exc)

    def torch_tensors(self, name):
        import torch
        dense = torch.full((3,), float(self.rank + 1))  # shares memory with its numpy view
        col.allreduce(dense, name)
        strided = torch.ones(6, dtype=torch.float64)[::2]  # not contiguous: staged and copied back
        col.allreduce(strided, name, op=col.ReduceOp.MAX)
        return dense.tolist(), strided.tolist()

    def device_arrays(self, name):
        """GPU tensors are staged through host memory and written back on their device."""
        tensor = FakeCudaTensor(np.full(3, self.rank + 1.0))
        col.allreduce(tensor, name)
        array = FakeCupyArray(np.full(2, self.rank + 5, dtype=np.int64))
        col.allreduce(array, name, op=col.ReduceOp.MAX)
        gathered = [FakeCupyArray(np.zeros(2)) for _ in range(self.size)]
        col.allgather(gathered, FakeCudaTensor(np.full(2, 10.0 * self.rank)), name)
        host = FakeCpuTensor(np.full(2, 1.0 + self.rank))
        col.allreduce(host, name, op=col.ReduceOp.PRODUCT)
        return (tensor.data.tolist(), tensor.moves, array.device_data.tolist(),
                [g.device_data.tolist() for g in gathered], host.data.tolist(), host.moves)

    def strided(self, name):
        a = np.ones(4)[::2]
        col.allreduce(a, name)
        return a.tolist()

    def leave(self, name):
        col.destroy_collective_group(name)
        return col.is_group_initialized(name), col.get_rank(name)


def members(n):
    """n members, one per bundle of a SPREAD placement group: distinct ranks where there are
    enough, else some share one."""
    group = placement_group([{"CPU": 1}] * n, strategy="SPREAD")
    ray.get(group.ready(), timeout=30)
    actors = [Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote(i, n)
              for i in range(n)]
    return group, actors


def expected_backend(actors):
    ranks = ray.get([a.where.remote() for a in actors])
    return "mpi" if len(set(ranks)) == len(ranks) and max(ranks) > 0 else "store"


def case_every_operation_across_three_members():
    group, actors = members(3)
    try:
        joined = ray.get([a.join.remote("three") for a in actors], timeout=60)
        backend = expected_backend(actors)
        assert joined == [(backend, r, 3) for r in range(3)], joined
        results = ray.get([a.every_operation.remote("three") for a in actors], timeout=60)
        for r, out in enumerate(results):
            assert out["sum"] == [6.0] * 4
            assert out["PRODUCT"] == [24, 24] and out["MIN"] == [2, 2] and out["MAX"] == [4, 4]
            assert out["broadcast"] == [0.0, 7.0, 14.0]
            assert out["allgather"] == [[0, 0], [10, 10], [20, 20]]
            assert out["reduce"] == ([6.0, 6.0] if r == 0 else [r + 1.0] * 2)  # only the root's changes
            assert out["reducescatter"] == [300.0 * r + 3.0] * 3  # sum over members of 100 r + member
            assert out["received"] == [float((r - 1) % 3)] * 2
        ray.get([a.leave.remote("three") for a in actors])
    finally:
        remove_placement_group(group)


def case_a_group_declared_by_the_driver_is_joined_on_first_use():
    group, actors = members(2)
    try:
        col.create_collective_group(actors, 2, [1, 0], group_name="declared")
        sums = ray.get([a.allreduce.remote("declared", 3) for a in actors], timeout=60)
        assert sums == [[3.0] * 3] * 2, sums  # members 1 and 0 contribute 1 and 2 (self.rank + 1)
        assert ray.get([a.call.remote("get_rank", "declared") for a in actors]) == [1, 0]
        raises(RuntimeError, col.create_collective_group, actors, 2, [0, 1], group_name="declared",
               match="already exists")
        raises(ValueError, col.create_collective_group, actors, 2, [0, 0], group_name="other")
        raises(TypeError, col.create_collective_group, ["not an actor"], 1, [0], group_name="other")
        col.destroy_collective_group("declared")
    finally:
        remove_placement_group(group)


def case_a_group_of_one():
    solo = Member.remote(0, 1)
    assert ray.get(solo.join.remote("solo"))[1:] == (0, 1)
    out = ray.get(solo.every_operation.remote("solo"), timeout=60)
    assert out["sum"] == [1.0] * 4 and out["allgather"] == [[0, 0]] and out["reducescatter"] == [0.0] * 3
    assert ray.get(solo.leave.remote("solo")) == (False, -1)


def case_members_that_disagree_all_get_an_error():
    group, actors = members(2)
    try:
        ray.get([a.join.remote("disagree") for a in actors], timeout=60)
        answers = ray.get([a.allreduce.remote("disagree", 3 + i) for i, a in enumerate(actors)], timeout=60)
        for answer in answers:
            assert isinstance(answer, str) and answer.startswith("CollectiveError") and "disagree" in answer, answer
        assert ray.get([a.allreduce.remote("disagree", 2) for a in actors], timeout=60) == [[3.0, 3.0]] * 2
        sent, got = ray.get([actors[0].send.remote("disagree", 5), actors[1].recv_into.remote("disagree", 3)],
                            timeout=60)
        assert isinstance(got, str) and got.startswith("CollectiveError"), (sent, got)
        ray.get([a.leave.remote("disagree") for a in actors])
    finally:
        remove_placement_group(group)


def case_bad_input_is_an_error_at_the_call():
    solo = Member.remote(0, 1)
    unknown = ray.get(solo.call.remote("allreduce", np.zeros(2), "nobody"))
    assert unknown[0] == "RuntimeError" and "'nobody' is not initialized" in unknown[1], unknown
    assert ray.get(solo.call.remote("get_rank", "nobody")) == -1
    assert ray.get(solo.call.remote("is_group_initialized", "nobody")) is False
    for args, kwargs, kind, text in [
        ((2, 5), {"group_name": "bad"}, "ValueError", "rank must be"),
        ((0, 0), {"group_name": "bad"}, "ValueError", "world_size"),
        ((1, 0), {"backend": "carrier-pigeon", "group_name": "bad"}, "ValueError", "carrier-pigeon"),
        ((1, 0), {"group_name": ""}, "ValueError", "group_name"),
    ]:
        answer = ray.get(solo.call.remote("init_collective_group", *args, **kwargs))
        assert answer[0] == kind and text in answer[1], (args, answer)
    ray.get(solo.join.remote("bad"))
    for what, args, kind, text in [
        ("allreduce", ([1, 2], "bad"), "TypeError", "numpy arrays"),
        ("allreduce", (np.zeros(2), "bad", "SUM"), "TypeError", "ReduceOp"),
        ("broadcast", (np.zeros(2), 3, "bad"), "ValueError", "src_rank"),
        ("send", (np.zeros(2), 0, "bad"), "ValueError", "own rank"),
        ("allgather", ([np.zeros(2)] * 2, np.zeros(2), "bad"), "ValueError", "tensor_list"),
        ("allreduce", (np.zeros(2), "bad"), "ValueError", "writeable"),  # (arguments arrive read-only)
        ("init_collective_group", (1, 0), "RuntimeError", "already initialized"),
    ]:
        answer = ray.get(solo.call.remote(what, *args) if what != "init_collective_group"
                         else solo.call.remote(what, *args, group_name="bad"))
        if kind is None:
            assert answer is None, answer
        else:
            assert answer[0] == kind and text in answer[1], (what, answer)
    ray.get(solo.leave.remote("bad"))


def case_destroying_a_group_fails_an_operation_waiting_in_it():
    group, actors = members(2)
    try:
        ray.get([a.join.remote("torn") for a in actors], timeout=60)
        waiting = actors[0].allreduce.remote("torn", 2)  # its peer never joins the operation
        time.sleep(0.5)
        started = time.monotonic()
        col.destroy_collective_group("torn")  # from the driver: the group ends for every member
        answer = ray.get(waiting, timeout=30)
        assert isinstance(answer, str) and "destroyed" in answer, answer
        assert time.monotonic() - started < 10
        assert ray.get(actors[1].leave.remote("torn")) == (False, -1)
        ray.get(actors[0].leave.remote("torn"))
        ray.get([a.join.remote("torn") for a in actors], timeout=60)  # the name can be used again
        assert ray.get([a.allreduce.remote("torn", 1) for a in actors], timeout=60) == [[3.0]] * 2
        ray.get([a.leave.remote("torn") for a in actors])
    finally:
        remove_placement_group(group)


def case_the_driver_can_be_a_member():
    helper = Member.remote(1, 2)
    joined = helper.join.remote("with-driver")
    col.init_collective_group(2, 0, group_name="with-driver")
    ray.get(joined, timeout=60)
    summed = helper.allreduce.remote("with-driver", 2)  # contributes 2.0 (its rank + 1)
    mine = np.full(2, 5.0)
    col.allreduce(mine, "with-driver")
    assert mine.tolist() == [7.0, 7.0] and ray.get(summed, timeout=30) == [7.0, 7.0]
    assert col.get_rank("with-driver") == 0 and col.get_collective_group_size("with-driver") == 2
    col.destroy_collective_group("with-driver")
    ray.get(helper.leave.remote("with-driver"))
    assert not col.is_group_initialized("with-driver")


def case_gpu_tensors_are_staged_through_host_memory():
    group, actors = members(2)
    try:
        ray.get([a.join.remote("gpu") for a in actors], timeout=60)
        results = ray.get([a.device_arrays.remote("gpu") for a in actors], timeout=60)
        for summed, moves, maximum, gathered, product, host_moves in results:
            assert summed == [3.0] * 3 and moves == 2, results  # one copy to the host, one back
            assert maximum == [6, 6] and gathered == [[0.0, 0.0], [10.0, 10.0]], results
            assert product == [2.0, 2.0] and host_moves == 0, results  # a CPU tensor: in place
        ray.get([a.leave.remote("gpu") for a in actors])
    finally:
        remove_placement_group(group)


def case_torch_tensors_work_in_place():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CaseSkipped("torch is not installed (tensors are staged through numpy; see README)")
    group, actors = members(2)
    try:
        ray.get([a.join.remote("torch") for a in actors], timeout=60)
        assert ray.get([a.torch_tensors.remote("torch") for a in actors], timeout=60) == \
            [([3.0] * 3, [1.0] * 3)] * 2
        ray.get([a.leave.remote("torch") for a in actors])
    finally:
        remove_placement_group(group)
