"""Measure the CPU an idle worker rank (and the idle driver) burns, with idle actors of each kind
(their own threads, an event loop) on the ranks: prints IDLE_CPU lines."""

import os
import sys
import time

import hpcray as ray

ray.init()


@ray.remote
def pid():
    return os.getpid()


def cpu_seconds(process_id):
    with open(f"/proc/{process_id}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Pinged:
    def ping(self):
        return os.getpid()


Idle = ray.remote(num_cpus=0)(Pinged)
IdleThreaded = ray.remote(num_cpus=0, max_concurrency=3)(Pinged)


@ray.remote(num_cpus=0)
class IdleAsync:
    async def ping(self):
        return os.getpid()


actors = [kind.remote() for kind in (Idle, IdleThreaded, IdleAsync) for _ in range(2)]
ray.get([a.ping.remote() for a in actors for _ in range(3)])
pids = sorted(set(ray.get([pid.remote() for _ in range(20)])) - {os.getpid()}) or [os.getpid()]
window = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
time.sleep(1.0)  # let the spin window after the last task pass
before = {p: cpu_seconds(p) for p in pids + [os.getpid()]}
time.sleep(window)
after = {p: cpu_seconds(p) for p in before}
for p in pids:
    print(f"IDLE_CPU worker pid={p} percent={100 * (after[p] - before[p]) / window:.1f}", flush=True)
print(f"IDLE_CPU driver pid={os.getpid()} percent={100 * (after[os.getpid()] - before[os.getpid()]) / window:.1f}",
      flush=True)
