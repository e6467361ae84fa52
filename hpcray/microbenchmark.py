"""hpcray's microbenchmark, modelled on ``ray microbenchmark`` (Ray's ``_private/ray_perf.py``).

    python -m hpcray.microbenchmark                         # single rank
    mpiexec -n 3 python -m hpcray.microbenchmark            # driver + 2 worker ranks
    mpiexec -n 3 python -m hpcray.microbenchmark --compare ray --json bench.json

Every case runs a warm-up, then ``--rounds`` timed rounds, and reports the median and the
min-max of its rate. With ``--compare ray`` the same case code runs on Ray in the same
invocation, with as many Ray worker CPUs as hpcray has worker CPUs, and the ratio is printed.
The physical limits of the machine are measured in the same run: MPI ping-pong latency between
ranks 0 and 1 (before ``init()``, while every rank takes part) and the memory-copy bandwidth.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

MB = 1 << 20


# ---------------------------------------------------------------------------------------------
# physical limits
# ---------------------------------------------------------------------------------------------
def mpi_pingpong_us(iterations: int = 2000) -> Optional[float]:
    """One-way latency of an 8-byte message between ranks 0 and 1 (every rank must call this)."""
    from ._private.config import Config
    from ._private.launchers import launched_by_mpi
    if Config.from_env().mpi == "0" or not launched_by_mpi():
        return None
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    if comm.Get_size() < 2:
        return None
    rank = comm.Get_rank()
    buffer = np.zeros(1, dtype=np.float64)
    comm.Barrier()
    started = time.perf_counter()
    if rank in (0, 1):
        other = 1 - rank
        for _ in range(iterations):
            if rank == 0:
                comm.Send(buffer, dest=other)
                comm.Recv(buffer, source=other)
            else:
                comm.Recv(buffer, source=other)
                comm.Send(buffer, dest=other)
    elapsed = time.perf_counter() - started
    comm.Barrier()
    return elapsed / iterations / 2 * 1e6


def memcopy_gbps(size: int = 256 * MB, rounds: int = 5) -> float:
    """``np.copyto`` into a warm buffer: the memory-copy limit."""
    source = np.ones(size // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = min(_timed(lambda: np.copyto(target, source)) for _ in range(rounds))
    return size / best / 1e9


def launch_mode() -> str:
    """How this run's hpcray got its workers: "mpiexec", "spawn" (init() started them) or
    "threads" (one process)."""
    from ._private import runtime
    world = runtime.PROCESS.world
    if world is None:
        return "threads"
    return "spawn" if world.spawned is not None else "mpiexec"


def _timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------------------------------------
# cases: each takes (runtime module, fixtures) and returns (units of work, seconds)
# ---------------------------------------------------------------------------------------------
class Fixtures:
    """Remote functions and actors of one runtime (hpcray or ray), made once."""

    def __init__(self, rt: Any, workers: int):
        self.rt = rt
        self.workers = max(1, workers)

        def noop():
            return None

        def small_value():
            return b"ok"

        def make_array(nbytes):
            return np.ones(nbytes // 8)

        def consume(array):
            return float(array[0]) + float(array[-1])

        class Actor:
            def small_value(self):
                return b"ok"

            def noop(self):
                return None

        class AsyncActor:
            async def small_value(self):
                return b"ok"

        def client(actor, calls):
            return len(rt.get([actor.small_value.remote() for _ in range(calls)]))

        def put_here(nbytes):
            array = np.ones(nbytes // 8)
            started = time.perf_counter()
            ref = rt.put(array)
            return [ref], time.perf_counter() - started  # the ref travels nested, not resolved

        def get_here(box):
            started = time.perf_counter()
            value = rt.get(box[0])
            seconds = time.perf_counter() - started
            assert value.nbytes == value.size * 8
            return seconds

        def spin(iterations):
            total = 0
            for i in range(iterations):
                total += i & 7
            return total

        self.spin = rt.remote(spin)

        def stream_small(n):
            for i in range(n):
                yield i

        def stream_arrays(n, nbytes):
            for i in range(n):
                yield np.full(nbytes // 8, float(i))

        self.stream_small = rt.remote(stream_small)
        self.stream_arrays = rt.remote(stream_arrays)
        self.noop = rt.remote(noop)
        self.small_value = rt.remote(small_value)
        self.make_array = rt.remote(make_array)
        self.consume = rt.remote(consume)
        self.client = rt.remote(client)
        self.put_here = rt.remote(put_here).options(scheduling_strategy="SPREAD")
        self.get_here = rt.remote(get_here).options(scheduling_strategy="SPREAD")
        self.actor = rt.remote(Actor).remote()
        self.concurrent_actor = rt.remote(Actor).options(max_concurrency=16).remote()
        self.async_actor = rt.remote(AsyncActor).remote()
        self.actors = [rt.remote(Actor).remote() for _ in range(self.workers)]
        rt.get([self.actor.noop.remote(), self.concurrent_actor.noop.remote(),
                self.async_actor.small_value.remote()] + [a.noop.remote() for a in self.actors])


def case_tasks_sync(f: Fixtures, n: int = 500) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    for _ in range(n):
        rt.get(f.noop.remote())
    return n, time.perf_counter() - started


def case_tasks_async(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    rt.get([f.noop.remote() for _ in range(n)])
    return n, time.perf_counter() - started


def case_tasks_and_get_batch(f: Fixtures, n: int = 1000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    rt.get([f.small_value.remote() for _ in range(n)])
    return n, time.perf_counter() - started


def case_actor_calls_sync(f: Fixtures, n: int = 500) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    for _ in range(n):
        rt.get(f.actor.small_value.remote())
    return n, time.perf_counter() - started


def case_actor_calls_async(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    rt.get([f.actor.small_value.remote() for _ in range(n)])
    return n, time.perf_counter() - started


def case_actor_calls_concurrent(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    rt.get([f.concurrent_actor.small_value.remote() for _ in range(n)])
    return n, time.perf_counter() - started


def case_async_actor_calls_async(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    rt.get([f.async_actor.small_value.remote() for _ in range(n)])
    return n, time.perf_counter() - started


def case_nn_actor_calls_async(f: Fixtures, per_client: int = 500) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    done = rt.get([f.client.remote(actor, per_client) for actor in f.actors])
    return sum(done), time.perf_counter() - started


def case_cpu_bound_tasks(f: Fixtures, per_worker: int = 4, iterations: int = 1_000_000) -> Tuple[int, float]:
    """Pure-Python tasks of about 50 ms each, 4 per worker CPU: scales with the processes that
    run them (tasks in threads of one process share one core)."""
    rt = f.rt
    n = per_worker * f.workers
    started = time.perf_counter()
    rt.get([f.spin.remote(iterations) for _ in range(n)])
    return n, time.perf_counter() - started


def case_stream_small_items(f: Fixtures, n: int = 5000) -> Tuple[int, float]:
    """One streaming generator task; every item's value read by the driver as it comes."""
    rt = f.rt
    started = time.perf_counter()
    got = 0
    for ref in f.stream_small.remote(n):
        rt.get(ref)
        got += 1
    assert got == n
    return n, time.perf_counter() - started


def case_stream_1mb_items(f: Fixtures, n: int = 100) -> Tuple[float, float]:
    """100 items of 1 MB from a generator task on another rank, each read by the driver."""
    rt = f.rt
    started = time.perf_counter()
    nbytes = 0
    for ref in f.stream_arrays.remote(n, MB):
        nbytes += rt.get(ref).nbytes
    assert nbytes == n * MB
    return nbytes / 1e9, time.perf_counter() - started


def case_put_calls(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    started = time.perf_counter()
    for i in range(n):
        rt.put(i)
    return n, time.perf_counter() - started


def case_get_calls(f: Fixtures, n: int = 2000) -> Tuple[int, float]:
    rt = f.rt
    ref = rt.put(b"small")
    started = time.perf_counter()
    for _ in range(n):
        rt.get(ref)
    return n, time.perf_counter() - started


def case_put_gigabytes(f: Fixtures, n: int = 5) -> Tuple[float, float]:
    rt = f.rt
    array = np.ones(100 * MB // 8)
    started = time.perf_counter()
    refs = [rt.put(array) for _ in range(n)]
    elapsed = time.perf_counter() - started
    del refs
    return n * array.nbytes / 1e9, elapsed


def case_get_100mb_from_other_rank(f: Fixtures) -> Tuple[float, float]:
    rt = f.rt
    ref = f.make_array.remote(100 * MB)
    rt.wait([ref], fetch_local=False)  # made, but not yet copied here
    started = time.perf_counter()
    value = rt.get(ref)
    elapsed = time.perf_counter() - started
    assert value.nbytes == 100 * MB
    return value.nbytes / 1e9, elapsed


def case_100mb_argument_by_ref(f: Fixtures) -> Tuple[float, float]:
    """Made by a task on one worker, passed by ref to a task on the next (SPREAD takes turns)."""
    rt = f.rt
    produced = f.make_array.options(scheduling_strategy="SPREAD").remote(100 * MB)
    rt.wait([produced], fetch_local=False)
    started = time.perf_counter()
    rt.get(f.consume.options(scheduling_strategy="SPREAD").remote(produced))
    return 100 * MB / 1e9, time.perf_counter() - started


def case_100mb_argument_by_value(f: Fixtures) -> Tuple[float, float]:
    """A 100 MB array of the driver's passed by value to a task on a worker."""
    rt = f.rt
    array = np.ones(100 * MB // 8)
    started = time.perf_counter()
    rt.get(f.consume.remote(array))
    return 100 * MB / 1e9, time.perf_counter() - started


def _driver_put_get(f: Fixtures, nbytes: int) -> Tuple[float, float]:
    rt = f.rt
    array = np.ones(nbytes // 8)
    rounds = max(2, min(100, (200 * MB) // nbytes))
    started = time.perf_counter()
    for _ in range(rounds):
        value = rt.get(rt.put(array))
        del value
    return rounds * nbytes / 1e9, time.perf_counter() - started


def case_driver_put_get_1mb(f: Fixtures) -> Tuple[float, float]:
    return _driver_put_get(f, MB)


def case_driver_put_get_100mb(f: Fixtures) -> Tuple[float, float]:
    return _driver_put_get(f, 100 * MB)


def _worker_put_get(f: Fixtures, nbytes: int) -> Tuple[float, float]:
    """``put`` in a task on one worker, ``get`` in a task on another; each side times itself."""
    rt = f.rt
    rounds = max(2, min(20, (200 * MB) // nbytes))
    seconds = 0.0
    for _ in range(rounds):
        box, put_seconds = rt.get(f.put_here.remote(nbytes))
        seconds += put_seconds + rt.get(f.get_here.remote(box))
        del box
    return rounds * nbytes / 1e9, seconds


def case_worker_put_get_1mb(f: Fixtures) -> Tuple[float, float]:
    return _worker_put_get(f, MB)


def case_worker_put_get_100mb(f: Fixtures) -> Tuple[float, float]:
    return _worker_put_get(f, 100 * MB)


def case_wait_1k_refs(f: Fixtures, n: int = 1000, waits: int = 20) -> Tuple[int, float]:
    """``waits`` waits on the same 1,000 ready refs (one wait takes well under a millisecond:
    timed alone, it measures the clock and the scheduler of the machine)."""
    rt = f.rt
    refs = [f.small_value.remote() for _ in range(n)]
    rt.get(refs)
    started = time.perf_counter()
    for _ in range(waits):
        ready, _ = rt.wait(refs, num_returns=n)
    assert len(ready) == n
    return waits, time.perf_counter() - started


def case_placement_group_create_removal(f: Fixtures, n: int = 100) -> Tuple[int, float]:
    rt = f.rt
    util = __import__(f"{rt.__name__}.util", fromlist=["placement_group"])
    if not hasattr(util, "placement_group"):
        raise NotImplementedError("placement groups are not implemented")
    started = time.perf_counter()
    for _ in range(n):
        group = util.placement_group([{"CPU": 0.01}])
        rt.get(group.ready())
        util.remove_placement_group(group)
    return n, time.perf_counter() - started


CASES: List[Tuple[str, Callable, str]] = [
    ("single client tasks sync", case_tasks_sync, "tasks/s"),
    ("single client tasks async", case_tasks_async, "tasks/s"),
    ("tasks and get batch", case_tasks_and_get_batch, "tasks/s"),
    ("1:1 actor calls sync", case_actor_calls_sync, "calls/s"),
    ("1:1 actor calls async", case_actor_calls_async, "calls/s"),
    ("1:1 actor calls concurrent", case_actor_calls_concurrent, "calls/s"),
    ("1:1 async-actor calls async", case_async_actor_calls_async, "calls/s"),
    ("n:n actor calls async", case_nn_actor_calls_async, "calls/s"),
    ("cpu-bound pure-Python tasks", case_cpu_bound_tasks, "tasks/s"),
    ("streaming generator small items", case_stream_small_items, "items/s"),
    ("streaming generator 1 MB items", case_stream_1mb_items, "GB/s"),
    ("single client put calls", case_put_calls, "puts/s"),
    ("single client get calls", case_get_calls, "gets/s"),
    ("single client put gigabytes", case_put_gigabytes, "GB/s"),
    ("get 100 MB array from another rank", case_get_100mb_from_other_rank, "GB/s"),
    ("100 MB argument passed by ref", case_100mb_argument_by_ref, "GB/s"),
    ("100 MB argument passed by value", case_100mb_argument_by_value, "GB/s"),
    ("driver put+get 1 MB", case_driver_put_get_1mb, "GB/s"),
    ("driver put+get 100 MB", case_driver_put_get_100mb, "GB/s"),
    ("worker put, other worker get 1 MB", case_worker_put_get_1mb, "GB/s"),
    ("worker put, other worker get 100 MB", case_worker_put_get_100mb, "GB/s"),
    ("wait on 1k refs", case_wait_1k_refs, "waits/s"),
    ("placement group create/removal", case_placement_group_create_removal, "groups/s"),
]


def run_case(function: Callable, fixtures: Fixtures, rounds: int) -> Dict[str, Any]:
    try:
        function(fixtures)  # warm-up
        rates = []
        for _ in range(rounds):
            amount, seconds = function(fixtures)
            rates.append(amount / seconds)
            gc.collect()
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}
    except NotImplementedError as exc:
        return {"error": f"n/a: {exc}"}


def run_suite(rt: Any, workers: int, rounds: int, only: Optional[List[str]]) -> Dict[str, Dict[str, Any]]:
    fixtures = Fixtures(rt, workers)
    results = {}
    for name, function, unit in CASES:
        if only and not any(o in name for o in only):
            continue
        result = run_case(function, fixtures, rounds)
        result["unit"] = unit
        results[name] = result
        print(f"  {rt.__name__:7} {name:38} {_fmt(result)}", file=sys.stderr, flush=True)
    return results


def cpu_seconds() -> float:
    """CPU time of this process so far (every thread: on rank 0, the driver and the scheduler)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scale_case(rt: Any, count: int) -> Dict[str, float]:
    """Submit ``count`` no-op tasks: submission and completion rates, driver memory per task, and
    the driver process's CPU time per task (with hpcray: rank 0's, the scheduler's included)."""
    noop = rt.remote(lambda: None)
    rt.get(noop.remote())
    gc.collect()
    before = rss_bytes()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    refs = [noop.remote() for _ in range(count)]
    submitted = time.perf_counter()
    peak = rss_bytes()
    for start in range(0, count, 10_000):
        rt.get(refs[start:start + 10_000])
    finished = time.perf_counter()
    cpu = cpu_seconds() - cpu_before
    del refs
    gc.collect()
    return {"tasks": count, "submit_per_s": count / (submitted - started),
            "complete_per_s": count / (finished - started),
            "driver_bytes_per_pending_task": (peak - before) / count,
            "driver_cpu_us_per_task": cpu / count * 1e6}


#: the rows whose cost of recording the timeline is measured (timeline_cost)
TIMELINE_CASES = ("single client tasks sync", "single client tasks async", "1:1 actor calls sync")


def timeline_cost(rt: Any, workers: int, rounds: int) -> Dict[str, Dict[str, float]]:
    """What recording the timeline costs: the rows of ``TIMELINE_CASES`` with recording off
    (``HPCRAY_TIMELINE_EVENTS=0``, a setting the driver's ``init()`` gives every rank) and on, in
    pairs of sessions within this run (3 x ``rounds`` pairs, the order flipped every other pair
    so that the machine's drift cancels). Per row: the median rate off and on, and the median
    of the pairs' on/off ratios (the run-to-run noise of one round is larger than the cost)."""
    from ._private.config import TIMELINE_MAX_EVENTS
    functions = {name: function for name, function, _ in CASES if name in TIMELINE_CASES}
    rates: Dict[Tuple[str, bool], List[float]] = {(name, on): [] for name in functions for on in (False, True)}
    before = os.environ.get("HPCRAY_TIMELINE_EVENTS")
    try:
        for pair in range(3 * rounds):
            for on in ((False, True) if pair % 2 == 0 else (True, False)):
                os.environ["HPCRAY_TIMELINE_EVENTS"] = str(TIMELINE_MAX_EVENTS) if on else "0"
                rt.init()
                fixtures = Fixtures(rt, workers)
                for name, function in functions.items():
                    function(fixtures)  # warm-up
                    amount, seconds = function(fixtures)
                    rates[(name, on)].append(amount / seconds)
                rt.shutdown()
    finally:
        if before is None:
            os.environ.pop("HPCRAY_TIMELINE_EVENTS", None)
        else:
            os.environ["HPCRAY_TIMELINE_EVENTS"] = before
    report = {}
    for name in functions:
        off, on = statistics.median(rates[(name, False)]), statistics.median(rates[(name, True)])
        ratio = statistics.median(b / a for a, b in zip(rates[(name, False)], rates[(name, True)]))
        report[name] = {"off": off, "on": on, "on_over_off": ratio, "pairs": len(rates[(name, True)])}
        print(f"  hpcray  timeline recording cost: {name:28} off {off:,.1f}/s, on {on:,.1f}/s "
              f"(on/off, median of {len(rates[(name, True)])} pairs: {ratio:.3f})", file=sys.stderr, flush=True)
    return report


def _fmt(result: Dict[str, Any]) -> str:
    if "error" in result:
        return result["error"]
    return f"{result['median']:>12,.1f} {result['unit']:8} ({result['min']:,.1f} - {result['max']:,.1f})"


# ---------------------------------------------------------------------------------------------
def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcray.microbenchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compare", choices=["ray"], help="also run every case on Ray")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (default 5)")
    parser.add_argument("--only", nargs="*", help="run only cases whose name contains one of these")
    parser.add_argument("--scale", type=int, nargs="*", default=[10_000, 100_000],
                        help="task counts of the scale case (default 10000 100000; 0 to skip)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    pingpong = mpi_pingpong_us()  # before init(): every rank takes part
    import hpcray
    started = time.perf_counter()
    hpcray.init()
    hpcray.get(hpcray.remote(lambda: 1).remote())
    init_to_first = time.perf_counter() - started
    workers = int(hpcray.cluster_resources().get("CPU", 1))
    report: Dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "worker_cpus": workers, "launch": launch_mode()},
        "command": " ".join([os.path.basename(sys.executable), "-m", "hpcray.microbenchmark"] + sys.argv[1:]),
        "limits": {"mpi_pingpong_one_way_us": pingpong, "memcopy_GBps": memcopy_gbps()},
        "hpcray": {"init_to_first_result_s": init_to_first},
    }
    print(f"launch: {report['machine']['launch']}, {workers} worker CPUs  limits: {report['limits']}  "
          f"init->first result: {init_to_first:.3f} s", file=sys.stderr)
    report["hpcray"]["cases"] = run_suite(hpcray, workers, args.rounds, args.only)
    report["hpcray"]["scale"] = [scale_case(hpcray, n) for n in args.scale if n > 0]
    hpcray.shutdown()
    if not args.only or any(o in "timeline recording cost" for o in args.only):
        report["hpcray"]["timeline_cost"] = timeline_cost(hpcray, workers, args.rounds)
    if args.compare == "ray":
        import ray  # installed separately; never a dependency of hpcray
        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray.get(ray.remote(lambda: 1).remote())
        report["ray"] = {"init_to_first_result_s": time.perf_counter() - started, "version": ray.__version__}
        report["ray"]["cases"] = run_suite(ray, workers, args.rounds, args.only)
        report["ray"]["scale"] = [scale_case(ray, n) for n in args.scale if n > 0]
        ray.shutdown()
    print_table(report)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0


def print_table(report: Dict[str, Any]) -> None:
    ours = report["hpcray"]["cases"]
    theirs = report.get("ray", {}).get("cases", {})
    print(f"{'case':38} | {'hpcray median (min - max)':40} | {'ray median':>14} | ratio")
    for name, result in ours.items():
        other = theirs.get(name)
        ratio = ""
        ray_text = ""
        if other is not None:
            ray_text = other.get("error") or f"{other['median']:,.1f}"
            if "median" in other and "median" in result and other["median"] > 0:
                ratio = f"{result['median'] / other['median']:.1f}x"
        print(f"{name:38} | {_fmt(result):40} | {ray_text:>14} | {ratio}")
    for name, row in report["hpcray"].get("timeline_cost", {}).items():
        print(f"hpcray: timeline recording cost, {name}: {row['on']:,.1f}/s recording, {row['off']:,.1f}/s "
              f"not recording (on/off, median of {row['pairs']} pairs: {row['on_over_off']:.3f})")
    for side in ("hpcray", "ray"):
        if side in report:
            print(f"{side}: init() to first result {report[side]['init_to_first_result_s']:.3f} s")
            for row in report[side].get("scale", []):
                print(f"{side}: {row['tasks']:,} no-op tasks: submit {row['submit_per_s']:,.0f}/s, "
                      f"complete {row['complete_per_s']:,.0f}/s, driver memory "
                      f"{row['driver_bytes_per_pending_task']:,.0f} B per pending task, driver CPU "
                      f"{row['driver_cpu_us_per_task']:,.1f} us per task")
    print(f"limits: {report['limits']}")


if __name__ == "__main__":
    sys.exit(main())
