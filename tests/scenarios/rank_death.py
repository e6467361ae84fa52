"""A worker rank dies and the job goes on (Open MPI started with ``mpiexec --with-ft ulfm``).

    mpiexec --with-ft ulfm -n 4 python rank_death.py CASE

Each case prints ``OK <case>`` when what it checks holds (an assertion error otherwise), and
``CPUS <before> <after>`` where the loss shows in cluster_resources(). A rank dies by SIGKILL
(``kill``), a segfault (``segv``) or a task calling ``os._exit`` (``exit``), which hpcray turns
into a crash the job survives.
"""

import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np

import hpcray as ray
from hpcray.exceptions import ActorDiedError, ObjectLostError, RayActorError, WorkerCrashedError

ray.init()
CASE = sys.argv[1]
MARKS = tempfile.mkdtemp(prefix="hpcray-rank-death-")


def die(how: str = "kill") -> None:
    if how == "exit":
        os._exit(3)
    if how == "segv":
        import ctypes
        ctypes.string_at(0)
    os.kill(os.getpid(), signal.SIGKILL)


def first_time(name: str) -> bool:
    """True once per name in this job (a file marks it), so a retry does not die again."""
    try:
        os.close(os.open(os.path.join(MARKS, name), os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def wait_for_cpus(total: float, timeout: float = 20.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpus = ray.cluster_resources().get("CPU", 0.0)
        if cpus <= total:
            return cpus
        time.sleep(0.05)
    return ray.cluster_resources().get("CPU", 0.0)


@ray.remote
def rank_of() -> int:
    return ray.get_runtime_context().get_rank()


@ray.remote
def dies_once(how: str) -> str:
    if first_time("task"):
        die(how)
    return f"done on rank {ray.get_runtime_context().get_rank()}"


@ray.remote(max_retries=0)
def dies_always(how: str) -> None:
    die(how)


@ray.remote
class Counter:
    def __init__(self, start: int):
        self.value = start

    def add(self) -> int:
        self.value += 1
        return self.value

    def rank(self) -> int:
        return ray.get_runtime_context().get_rank()

    def crash(self, how: str) -> None:
        die(how)

    def crash_once(self, how: str) -> int:
        if first_time("call"):
            die(how)
        return self.value

    def big(self) -> np.ndarray:
        return np.arange(1_000_000, dtype=np.int64)


@ray.remote(num_returns=2)
def make_big(marker: str, scale: int):
    """A large value (kept in its rank's private memory) and the pid that made it; each run is
    counted in a file."""
    with open(os.path.join(MARKS, marker), "a") as handle:
        handle.write(f"{os.getpid()}\n")
    return np.arange(1_000_000, dtype=np.int64) * scale, os.getpid()


@ray.remote
def total(array: np.ndarray) -> int:
    return int(array.sum())


def runs_of(marker: str) -> int:
    with open(os.path.join(MARKS, marker)) as handle:
        return len(handle.read().split())


cpus = ray.cluster_resources()["CPU"]
ray.get([rank_of.remote() for _ in range(8)])

if CASE in ("task_kill", "task_exit", "task_segv"):
    # a task whose rank dies is run again on another rank (max_retries, Ray's default 3)
    how = CASE[len("task_"):]
    result = ray.get(dies_once.remote(how), timeout=60)
    assert result.startswith("done on rank"), result
    after = wait_for_cpus(cpus - 1)
    assert after == cpus - 1, (cpus, after)
    assert ray.get([rank_of.remote() for _ in range(6)], timeout=30)  # the survivors still work
    print("CPUS", cpus, after)

elif CASE == "retries_exhausted":
    try:
        ray.get(dies_always.remote("exit"), timeout=60)
        raise AssertionError("no error")
    except WorkerCrashedError as exc:
        message = str(exc)
        assert "dies_always" in message and "rank" in message and "max_retries=0" in message, message
        print("MESSAGE", message)
    assert ray.get(rank_of.remote(), timeout=30) >= 0

elif CASE == "actor_restart":
    # max_restarts=1: the call in flight fails, later calls reach a new instance made with the
    # original arguments; a second death is final
    counter = Counter.options(max_restarts=1).remote(10)
    assert ray.get(counter.add.remote(), timeout=30) == 11
    first = ray.get(counter.rank.remote(), timeout=30)
    try:
        ray.get(counter.crash.remote("exit"), timeout=60)
        raise AssertionError("no error")
    except RayActorError as exc:
        print("IN_FLIGHT", type(exc).__name__, exc)
    assert ray.get(counter.add.remote(), timeout=60) == 11  # __init__(10) again
    second = ray.get(counter.rank.remote(), timeout=30)
    assert second != first, (first, second)
    try:
        ray.get(counter.crash.remote("kill"), timeout=60)
        raise AssertionError("no error")
    except RayActorError:
        pass
    try:
        ray.get(counter.add.remote(), timeout=60)
        raise AssertionError("no error")
    except ActorDiedError as exc:
        assert "no restarts left" in str(exc), exc
        print("FINAL", exc)

elif CASE == "call_retried":
    # max_task_retries=1: the call in flight when the rank dies runs again on the new instance
    counter = Counter.options(max_restarts=-1, max_task_retries=1).remote(5)
    assert ray.get(counter.crash_once.remote("kill"), timeout=60) == 5
    assert ray.get(counter.add.remote(), timeout=30) == 6

elif CASE == "named_actor":
    counter = Counter.options(name="survivor", max_restarts=2).remote(0)
    ray.get(counter.add.remote(), timeout=30)
    try:
        ray.get(counter.crash.remote("kill"), timeout=60)
    except RayActorError:
        pass
    again = ray.get_actor("survivor")
    assert ray.get(again.add.remote(), timeout=60) == 1
    assert ray.get(counter.add.remote(), timeout=30) == 2  # the old handle: the same actor

elif CASE == "object_lost":
    # HPCRAY_ARENA_BYTES=0: a large value stays in its rank's private memory and dies with it
    holder = Counter.remote(0)
    ref = holder.big.remote()
    ray.wait([ref], timeout=30, fetch_local=False)  # (fetch_local: the driver would copy it)
    try:
        ray.get(holder.crash.remote("kill"), timeout=60)
    except RayActorError:
        pass
    wait_for_cpus(cpus - 1)
    try:
        ray.get(ref, timeout=30)
        raise AssertionError("no error")
    except ObjectLostError as exc:
        print("LOST", exc)

elif CASE == "object_rebuilt":
    # HPCRAY_ARENA_BYTES=0: the values die with their rank; their tasks run again (lineage)
    from hpcray.util.placement_group import placement_group
    from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    expected = int(np.arange(1_000_000, dtype=np.int64).sum())
    group = placement_group([{"CPU": 1}])  # the three values are made on one rank
    ray.get(group.ready(), timeout=30)
    make_big = make_big.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, 0))
    first, first_pid = make_big.remote("first", 1)
    holder = ray.get(first_pid, timeout=30)
    ray.wait([first], timeout=30, fetch_local=False)
    # a second value made from the first, and one no task can make again
    second, _ = make_big.remote("second", 2)
    ray.wait([second], timeout=30, fetch_local=False)
    lost, lost_pid = make_big.options(max_retries=0).remote("lost", 3)
    ray.wait([lost], timeout=30, fetch_local=False)
    os.kill(holder, signal.SIGKILL)  # the rank that holds the first value dies
    wait_for_cpus(cpus - 1)
    assert ray.get(total.remote(first), timeout=60) == expected  # a task that needs it waits for it
    assert int(ray.get(first, timeout=60).sum()) == expected
    assert runs_of("first") == 2, runs_of("first")
    assert int(ray.get(second, timeout=60).sum()) == 2 * expected  # wherever it was, it is there
    assert ray.get(lost_pid, timeout=30) == holder  # (made on the dead rank too)
    try:
        ray.get(lost, timeout=30)
        raise AssertionError("no error")
    except ObjectLostError as exc:  # max_retries=0: nothing makes it again
        assert "which died" in str(exc), exc
        print("NOT_REBUILT", exc)
    print("REBUILT", runs_of("first"))

elif CASE == "bundle_moved":
    from hpcray.util.placement_group import placement_group
    from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    ray.get(group.ready(), timeout=30)
    in_bundle = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0)
    before = ray.get(rank_of.options(scheduling_strategy=in_bundle).remote(), timeout=30)
    ray.get(dies_once.options(scheduling_strategy=in_bundle).remote("kill"), timeout=60)
    after = ray.get(rank_of.options(scheduling_strategy=in_bundle).remote(), timeout=30)
    assert after != before, (before, after)
    print("BUNDLE", before, after)

elif CASE == "collective_member_dies":
    # a member of a collective group dies: the others' operation fails, never hangs
    from hpcray.util import collective as col

    @ray.remote
    class Member:
        def __init__(self, rank):
            col.init_collective_group(3, rank, group_name="doomed")

        def allreduce(self):
            try:
                col.allreduce(np.ones(4), "doomed")
                return "no error"
            except Exception as exc:
                return f"{type(exc).__name__}: {exc}"

        def crash(self):
            die("kill")

    members = [Member.remote(r) for r in range(3)]
    assert ray.get([m.allreduce.remote() for m in members], timeout=60) == ["no error"] * 3
    members[2].crash.remote()
    wait_for_cpus(cpus - 1)
    started = time.monotonic()
    answers = ray.get([m.allreduce.remote() for m in members[:2]], timeout=60)
    assert all(a.startswith("CollectiveError") for a in answers), answers
    print("ANSWERS", answers, f"{time.monotonic() - started:.1f} s")

elif CASE == "capacity_restored":
    # A rank dies (SIGKILL) while it runs a task; a new process takes its number: the job has all
    # its CPUs again, tasks run on every rank, an actor placed there works and a value made there
    # is read on another rank. A value the dead process held is lost, asked of the new one or not.
    # Then the new process dies too, and is replaced again.
    @ray.remote
    def whoami():
        time.sleep(0.05)
        return ray.get_runtime_context().get_rank(), os.getpid()

    def pids_by_rank():
        return dict(ray.get([whoami.options(scheduling_strategy="SPREAD").remote() for _ in range(9)],
                            timeout=60))

    def placed_on(rank):
        """A Counter on ``rank`` (actors spread over the ranks; the others are dropped)."""
        for _ in range(10):
            counters = [Counter.options(scheduling_strategy="SPREAD").remote(10) for _ in range(3)]
            where = ray.get([c.rank.remote() for c in counters], timeout=60)
            if rank in where:
                return counters[where.index(rank)]
        raise AssertionError(f"no actor placed on rank {rank}")

    @ray.remote
    def sleeper(seconds):
        time.sleep(seconds)
        return ray.get_runtime_context().get_rank()

    pids = pids_by_rank()
    assert sorted(pids) == [1, 2, 3], pids
    for round in (1, 2):
        holder = placed_on(2)
        stale = holder.big.remote()
        ray.wait([stale], fetch_local=False, timeout=60)
        running = [sleeper.remote(1.0) for _ in range(3)]
        time.sleep(0.3)
        os.kill(pids[2], signal.SIGKILL)
        assert len(ray.get(running, timeout=60)) == 3  # the one on the dead rank ran again
        deadline = time.monotonic() + 30
        while True:
            now = pids_by_rank()
            if sorted(now) == [1, 2, 3] and now[2] != pids[2] and ray.cluster_resources()["CPU"] == cpus:
                break
            assert time.monotonic() < deadline, (now, ray.cluster_resources())
            time.sleep(0.2)
        assert now[1] == pids[1] and now[3] == pids[3], (pids, now)
        pids = now
        counter = placed_on(2)
        assert ray.get(counter.add.remote(), timeout=30) == 11
        big = counter.big.remote()
        assert ray.get(total.remote(big), timeout=60) == sum(range(1_000_000))
        assert int(ray.get(big, timeout=60).sum()) == sum(range(1_000_000))
        try:
            ray.get(stale, timeout=30)
            raise AssertionError("the dead process's value came back")
        except ObjectLostError as exc:
            print("LOST", round, str(exc).splitlines()[0])
        print("REPLACED", round, "CPUS", ray.cluster_resources()["CPU"], flush=True)

elif CASE == "driver_dies":
    ray.get([rank_of.remote() for _ in range(4)])
    print("DRIVER_DIES", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

else:
    raise SystemExit(f"unknown case {CASE}")

shutil.rmtree(MARKS, ignore_errors=True)
print("OK", CASE, flush=True)
