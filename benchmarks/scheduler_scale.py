"""Rank 0's scheduler alone, with many worker ranks: its CPU time per task from 2 to 1,000 ranks.

    python benchmarks/scheduler_scale.py [--ranks 2 8 32 128 1000] [--tasks 50000]

A job of 1,000 ranks cannot run on a development machine, and a job of 32 ranks on 2 cores
measures the machine's oversubscription more than rank 0 (every rank's threads take turns on
the cores). So this drives ``hpcray._private.scheduler.Scheduler`` directly, as rank 0's loop
does: no-op tasks of 1 CPU are submitted, every EXECUTE it sends is answered by a TASK_DONE from
that rank (oldest first, as ranks finish them), and the process's CPU time is counted from the
first SUBMIT to the last completion. Messages are recorded, never sent: what is left is the
scheduler's own work per task (placement, the object table, its per-rank bookkeeping), which
is what would limit a job of many ranks. The figure includes the submitting side's cost of
making each TaskSpec, as rank 0 pays it for its own driver.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from hpcray._private import protocol as P  # noqa: E402
from hpcray._private.scheduler import Scheduler  # noqa: E402
from hpcray._private.serialization import serialize  # noqa: E402
from hpcray.microbenchmark import cpu_seconds  # noqa: E402

NO_ARGS = serialize(((), {}))
DONE = [serialize(None)]


def run(ranks: int, tasks: int, in_flight: int) -> dict:
    """``tasks`` no-op tasks through a scheduler of ``ranks`` one-CPU ranks, at most
    ``in_flight`` submitted and not yet done (the driver's side of a steady stream)."""
    outbox: collections.deque = collections.deque()
    workers = [P.RankInfo(r, f"host{r // 64}", 1000 + r, {"CPU": 1.0}, [], []) for r in range(1, ranks + 1)]
    scheduler = Scheduler(lambda dest, msg: outbox.append((dest, msg)), workers, prefetch=2)
    running: collections.deque = collections.deque()  # (rank, task id), in the order sent
    submitted = done = 0
    started_cpu, started = cpu_seconds(), time.perf_counter()
    while done < tasks:
        while submitted < tasks and submitted - done < in_flight:
            task_id = submitted.to_bytes(16, "big")
            spec = P.TaskSpec(task_id, b"f" * 16, b"blob" if submitted == 0 else None, "noop", NO_ARGS, [],
                              [task_id + b"\x01"], 1, {"CPU": 1.0}, 3, None, None, None, 0)
            scheduler.handle(0, (P.SUBMIT, spec))
            submitted += 1
        scheduler.dispatch()
        while outbox:
            dest, msg = outbox.popleft()
            if msg[0] == P.EXECUTE:
                running.append((dest, msg[1].task_id))
            elif msg[0] == P.STEAL:  # the rank hands it back at once (it had not started it)
                scheduler.handle(dest, (P.STOLEN, msg[1]))
        # the oldest running tasks end (a batch, as ranks report them within one loop turn)
        for _ in range(min(len(running), max(1, ranks // 2))):
            rank, task_id = running.popleft()
            scheduler.handle(rank, (P.TASK_DONE, task_id, DONE, None, False))
            scheduler.handle(0, (P.HOLD, task_id + b"\x01", -1))  # the driver took the result
            done += 1
    cpu = cpu_seconds() - started_cpu
    wall = time.perf_counter() - started
    assert not scheduler.tasks and not scheduler.objects, (len(scheduler.tasks), len(scheduler.objects))
    return {"ranks": ranks, "tasks": tasks, "cpu_us_per_task": cpu / tasks * 1e6, "tasks_per_cpu_second": tasks / cpu,
            "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="*", default=[2, 8, 32, 128, 1000])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    rows = []
    for ranks in args.ranks:
        row = run(ranks, args.tasks, in_flight=max(64, 4 * ranks))
        rows.append(row)
        print(f"{ranks:5} ranks: {row['cpu_us_per_task']:7.1f} us of rank 0's CPU per task "
              f"({row['tasks_per_cpu_second']:,.0f} tasks per CPU second)", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"python": sys.version.split()[0], "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
