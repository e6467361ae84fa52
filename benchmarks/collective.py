"""Allreduce among actors: hpcray.util.collective against raw mpi4py and Ray's object-store pattern.

    mpiexec -n 3 python benchmarks/collective.py [--compare ray] [--json FILE]   # 2 members
    mpiexec -n 5 python benchmarks/collective.py [--compare ray] [--json FILE]   # 4 members

One member per worker rank. For float32 arrays of 1 KB, 1 MB and 100 MB it reports the time of
one allreduce (the slowest member's average over a loop):

- ``mpi4py``: ``Allreduce`` on a communicator of the worker ranks, before ``hpcray.init()``,
  while every rank takes part (the limit);
- ``hpcray``: actors in a SPREAD placement group, ``hpcray.util.collective.allreduce`` (each
  member on its own rank: the MPI path);
- ``ray pattern`` (with ``--compare ray``): what Ray users write without a collective library,
  on Ray with one CPU per member: each actor ``put``s its array, then every actor ``get``s all of
  them and sums.
"""

import argparse
import json
import platform
import sys
import time

import numpy as np
from mpi4py import MPI

SIZES = [(1 << 10, 300), (1 << 20, 60), (100 << 20, 6)]  # bytes, iterations


def raw_mpi(world):
    """Before init(): Allreduce among ranks 1..N; rank 0 gets {bytes: seconds per op}."""
    rank = world.Get_rank()
    members = world.Split(0 if rank > 0 else MPI.UNDEFINED, rank)
    results = {}
    if members != MPI.COMM_NULL:
        for nbytes, iterations in SIZES:
            array = np.zeros(nbytes // 4, dtype=np.float32)
            members.Allreduce(MPI.IN_PLACE, array)  # warm-up
            members.Barrier()
            started = time.perf_counter()
            for _ in range(iterations):
                members.Allreduce(MPI.IN_PLACE, array)
            elapsed = (time.perf_counter() - started) / iterations
            results[nbytes] = members.allreduce(elapsed, op=MPI.MAX)
        members.Free()
    gathered = world.gather(results, root=0)
    return gathered[1] if rank == 0 else None


def hpcray_collective(members):
    import hpcray as ray
    from hpcray.util import collective as col
    from hpcray.util.placement_group import placement_group
    from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote(num_cpus=1)
    class Member:
        def __init__(self, rank, size):
            col.init_collective_group(size, rank, group_name="bench")
            self.backend = col.get_group_backend("bench")

        def loop(self, nbytes, iterations):
            array = np.zeros(nbytes // 4, dtype=np.float32)
            col.allreduce(array, "bench")  # warm-up
            col.barrier("bench")
            started = time.perf_counter()
            for _ in range(iterations):
                col.allreduce(array, "bench")
            return (time.perf_counter() - started) / iterations, self.backend

    group = placement_group([{"CPU": 1}] * members, strategy="SPREAD")
    ray.get(group.ready())
    actors = [Member.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote(i, members)
              for i in range(members)]
    results, backends = {}, set()
    for nbytes, iterations in SIZES:
        answers = ray.get([a.loop.remote(nbytes, iterations) for a in actors])
        results[nbytes] = max(seconds for seconds, _ in answers)
        backends.update(backend for _, backend in answers)
    return results, sorted(backends)


def ray_pattern(members):
    import ray

    ray.init(num_cpus=members, include_dashboard=False, logging_level="ERROR")

    @ray.remote(num_cpus=1)
    class Member:
        def make(self, nbytes):
            self.array = np.zeros(nbytes // 4, dtype=np.float32)
            return True

        def contribute(self):
            return ray.put(self.array)

        def combine(self, refs):
            total = np.zeros_like(self.array)
            for part in ray.get(refs):
                total += part
            self.array = total
            return True

    actors = [Member.remote() for _ in range(members)]
    results = {}
    for nbytes, iterations in SIZES:
        ray.get([a.make.remote(nbytes) for a in actors])
        rounds = max(3, iterations // 3)
        for attempt in range(rounds + 1):  # (the first round is a warm-up)
            if attempt == 1:
                started = time.perf_counter()
            refs = ray.get([a.contribute.remote() for a in actors])
            ray.get([a.combine.remote(refs) for a in actors])
        results[nbytes] = (time.perf_counter() - started) / rounds
    ray.shutdown()
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=["ray"])
    parser.add_argument("--json")
    args = parser.parse_args()
    world = MPI.COMM_WORLD
    members = world.Get_size() - 1
    if members < 1:
        sys.exit("run under mpiexec with at least 2 ranks (driver + members)")
    raw = raw_mpi(world)
    import hpcray
    hpcray.init()  # ranks >= 1 serve from here on
    mine, backends = hpcray_collective(members)
    hpcray.shutdown()
    ray = ray_pattern(members) if args.compare == "ray" else None
    rows = []
    print(f"allreduce among {members} actors (one per rank; hpcray backend: {', '.join(backends)})")
    print(f"{'size':>8} | {'mpi4py':>10} | {'hpcray':>10} | {'of mpi4py':>9} | {'ray pattern':>11} | {'hpcray vs ray':>13}")
    for nbytes, _ in SIZES:
        label = f"{nbytes >> 20} MB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KB"
        row = {"bytes": nbytes, "mpi4py_s": raw[nbytes], "hpcray_s": mine[nbytes],
               "ray_pattern_s": ray[nbytes] if ray else None}
        rows.append(row)
        ray_cells = (f"{ray[nbytes] * 1e6:>9.0f}us | {ray[nbytes] / mine[nbytes]:>12.1f}x" if ray
                     else f"{'-':>11} | {'-':>13}")
        print(f"{label:>8} | {raw[nbytes] * 1e6:>8.0f}us | {mine[nbytes] * 1e6:>8.0f}us | "
              f"{raw[nbytes] / mine[nbytes]:>8.0%} | {ray_cells}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"members": members, "backends": backends, "rows": rows,
                       "machine": platform.platform(), "mpi": MPI.Get_library_version().splitlines()[0]},
                      handle, indent=2)


if __name__ == "__main__":
    main()
