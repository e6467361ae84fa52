"""The object plane: large values stay on the rank that made them and move rank to rank."""

import gc
import os
import time

import numpy as np

import hpcray as ray
from hpcray import exceptions
from hpcray._private.api import query

from .helpers import raises, scratch_file, wait_for_condition

MB = 1 << 20


@ray.remote
def make(nbytes, fill=1.0):
    return np.full(nbytes // 8, fill)


@ray.remote(scheduling_strategy="SPREAD")
def checksum(array):
    return float(array.sum()), ray.get_runtime_context().get_rank()


@ray.remote
def identity(x):
    return x


def case_large_result_stays_on_its_rank():
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0)
    before = query("stats")["bytes_held"]
    refs = [make.remote(8 * MB, i) for i in range(4)]
    ray.wait(refs, num_returns=4, fetch_local=False)
    held = query("stats")["bytes_held"] - before
    if ray.get_runtime_context().get_rank() == 0 and len(ray.nodes()[0].get("Ranks", [])) >= 1 \
            and ray.cluster_resources()["CPU"] > 0 and _mpi():
        assert held < 1 * MB, f"rank 0 holds {held} bytes of values made on worker ranks"
    sums = ray.get([checksum.remote(r) for r in refs])
    assert [s for s, _ in sums] == [float(i * MB) for i in range(4)]
    assert [float(a.sum()) for a in ray.get(refs)] == [float(i * MB) for i in range(4)]


def _mpi():
    return any(r != 0 for node in ray.nodes() for r in node.get("Ranks", []))


def case_large_values_of_every_shape_round_trip():
    base = np.arange(2 * MB // 8, dtype=np.float64)
    values = {
        "array": base,
        "empty": np.array([], dtype=np.float32),
        "non_contiguous": base.reshape(512, -1)[:, ::3],
        "fortran": np.asfortranarray(base.reshape(512, -1)),
        "bytes": os.urandom(MB),
        # over two of parallel_copy's pieces, of a size no piece boundary divides: each byte in place
        "pieces": np.random.default_rng(0).integers(0, 256, size=20 * MB + 12345, dtype=np.uint8),
        "nested": {"a": [base[: MB // 8], (base[::2],)], "b": b"x" * (300 * 1024)},
    }
    for name, value in values.items():
        for got in (ray.get(identity.remote(value)), ray.get(ray.put(value)),
                    ray.get(identity.remote(identity.remote(value)))):
            if isinstance(value, np.ndarray):
                assert got.dtype == value.dtype and got.shape == value.shape and np.array_equal(got, value), name
            elif name == "nested":
                assert np.array_equal(got["a"][0], value["a"][0]) and np.array_equal(got["a"][1][0], value["a"][1][0])
                assert got["b"] == value["b"]
            else:
                assert got == value, name


def case_worker_put_large_and_pass_on():
    @ray.remote
    def put_large():
        return [ray.put(np.full(MB // 8, 2.0))]

    box = ray.get(put_large.remote())
    assert ray.get(checksum.remote(box[0]))[0] == 2.0 * (MB // 8)
    assert ray.get(box[0]).sum() == 2.0 * (MB // 8)


def _rss_here():
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@ray.remote
def rss():
    return _rss_here()


def case_put_get_loop_keeps_memory_flat():
    """2,000 puts and gets of a 10 MB array, and 200 round trips through a worker rank: the
    object table, the driver and the workers stay flat."""
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0)
    held_before = query("stats")["bytes_held"]
    array = np.ones(10 * MB // 8)
    for i in range(200):  # warm up buffers and pools
        assert ray.get(ray.put(array))[0] == 1.0
    driver_mid, worker_mid = _rss_here(), ray.get(rss.remote())
    for i in range(1800):
        assert ray.get(ray.put(array))[-1] == 1.0
    for i in range(200):
        assert ray.get(identity.remote(make.remote(10 * MB, i)))[0] == float(i)
    gc.collect()
    wait_for_condition(lambda: query("stats")["bytes_held"] <= held_before, timeout=10)
    assert _rss_here() < driver_mid + 100 * MB, (_rss_here() - driver_mid) / MB
    assert ray.get(rss.remote()) < worker_mid + 100 * MB


def case_lost_object_is_an_error_not_a_hang():
    @ray.remote
    def forget_everything():
        from hpcray._private import runtime
        session = runtime.current()
        session.executor.plane.owned.clear() if session.executor.plane else None
        return ray.get_runtime_context().get_rank()

    ref = make.remote(2 * MB)
    ray.wait([ref], fetch_local=False)
    if not _mpi():
        return  # single rank: the value is in rank 0's own table, nothing can lose it
    ray.get([forget_everything.options(scheduling_strategy="SPREAD").remote() for _ in range(8)])
    raises(exceptions.ObjectLostError, ray.get, ref, timeout=20)


@ray.remote
class ArgumentHolder:
    def __init__(self, array):
        self.total = float(array.sum())

    def add(self, array, scale=1.0):
        return self.total + scale * float(array.sum())


@ray.remote
def mixes(a, b, box, small=0, big=None):
    return float(a.sum()) + b + float(ray.get(box[0]).sum()) + small + float(big.sum())


@ray.remote
def gated(path, array):
    while not os.path.exists(path):
        time.sleep(0.02)
    return float(array[0])


@ray.remote
def relays(nbytes):
    return ray.get(checksum.remote(np.full(nbytes // 8, 4.0)))[0]


def case_large_arguments_by_value_travel_as_objects_and_are_freed():
    """Arguments over 100 KiB travel as an object of the caller's (Ray puts them in its object
    store): the call gets them whole, and the object goes once the call is done."""
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0)
    objects_before = query("stats")["objects"]
    array = np.full(4 * MB // 8, 2.0)
    inner = ray.put(np.full(MB // 8, 3.0))
    n, m = 4 * MB // 8, MB // 8
    assert ray.get(mixes.remote(array, 1, [inner], small=5, big=array), timeout=60) == 2 * n + 1 + 3 * m + 5 + 2 * n
    holder = ArgumentHolder.remote(array)
    assert ray.get(holder.add.remote(array, scale=0.5), timeout=60) == 2 * n + n
    assert ray.get(relays.remote(2 * MB), timeout=60) == 4.0 * (2 * MB // 8)  # from a task, on a worker
    # while a call that has them runs, its arguments are one object more (where they travel)
    gate = scratch_file("gate")
    gc.collect()
    wait_for_condition(lambda: query("stats")["tasks"] == 0)
    objects_now = query("stats")["objects"]
    running = gated.remote(gate, array)
    extra = 2 if _mpi() else 1  # the return, and the arguments' object; one process moves nothing
    wait_for_condition(lambda: query("stats")["objects"] == objects_now + extra, timeout=10)
    open(gate, "w").close()
    assert ray.get(running, timeout=60) == 2.0
    os.remove(gate)
    ray.kill(holder)
    del inner, running, holder
    gc.collect()
    wait_for_condition(lambda: query("stats")["objects"] <= objects_before, timeout=10)
