"""Worker ranks spawned by init() (python app.py): what runs where, and their end.

    spawned.py parallel        CPU-bound tasks run in several worker processes at once
    spawned.py count N         init(num_cpus=N) spawns N workers
    spawned.py linger          prints the workers' pids, then sleeps (the test kills the driver)
    spawned.py where           prints whether tasks run in this process (the fallback) or not
    spawned.py broken          the workers end before joining: init() must end the program
    spawned.py ucx             prints UCX's memory-hook mode as the driver and a worker see it
    spawned.py numpy           a worker imports numpy only for a value that holds arrays and
                               asyncio only for async code (also run under mpiexec); prints
                               whether the workers imported pynvml
"""

import os
import sys
import tempfile
import time

import hpcray as ray

command = sys.argv[1]
if command == "count":
    ray.init(num_cpus=int(sys.argv[2]))
elif command == "broken":  # workers whose Python ends before they can join the driver
    from hpcray._private import spawn
    spawn.BOOTSTRAP = "import sys; sys.stderr.write('WORKER CANNOT START\\n'); sys.exit(3)"
    ray.init()
    print("NOT_REACHED", flush=True)
else:
    ray.init()


@ray.remote
def pid():
    return os.getpid()


@ray.remote
def busy_until_all_started(folder, expected):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 30
    spins = 0
    while len(os.listdir(folder)) < expected and time.monotonic() < deadline:
        spins += 1  # pure Python, holding its process's GIL: only other processes can join in
    return os.getpid(), len(os.listdir(folder)) >= expected


if command == "parallel":
    folder = tempfile.mkdtemp(prefix="hpcray-spawned-")
    results = ray.get([busy_until_all_started.remote(folder, 3) for _ in range(3)], timeout=60)
    pids = {p for p, _ in results}
    assert all(met for _, met in results), "three CPU-bound tasks did not all run at once"
    assert len(pids) == 3 and os.getpid() not in pids, (pids, os.getpid())
    print("PARALLEL_OK", flush=True)
elif command == "count":
    ranks = sorted(r for node in ray.nodes() for r in node["Ranks"])
    print("CPUS", int(ray.cluster_resources()["CPU"]), "RANKS", ranks, flush=True)
elif command == "linger":
    workers = set()
    while len(workers) < 3:
        workers |= set(ray.get([pid.remote() for _ in range(12)]))
    print("WORKER_PIDS", " ".join(map(str, sorted(workers))), flush=True)
    time.sleep(120)
elif command == "ucx":
    @ray.remote
    def hook_mode():
        return os.environ.get("UCX_MEM_MMAP_HOOK_MODE"), os.getpid()

    mode, where = ray.get(hook_mode.remote())
    assert where != os.getpid()
    print("UCX_HOOKS", os.environ.get("UCX_MEM_MMAP_HOOK_MODE"), mode, flush=True)
elif command == "numpy":
    @ray.remote
    def numpy_loaded(value=None):
        return "numpy" in sys.modules

    # hpcray itself does not import numpy (a third of a worker's start): tasks, large bytes
    # values through the arena and by messages leave it out; an array brings it in
    assert "numpy" not in sys.modules
    big = os.urandom(8 << 20)
    assert ray.get([numpy_loaded.remote() for _ in range(6)]) == [False] * 6

    @ray.remote
    def asyncio_loaded():
        return "asyncio" in sys.modules

    assert ray.get([asyncio_loaded.remote() for _ in range(6)]) == [False] * 6

    @ray.remote
    def nvml_loaded():
        return "pynvml" in sys.modules

    # spawned workers leave looking for GPUs to the driver (under mpiexec each rank looks)
    print("WORKERS_LOADED_NVML", any(ray.get([nvml_loaded.remote() for _ in range(6)])), flush=True)

    @ray.remote
    class Waiter:
        async def loaded(self):
            return "asyncio" in sys.modules

    assert ray.get(Waiter.remote().loaded.remote()) is True
    assert ray.get([numpy_loaded.remote(big) for _ in range(6)]) == [False] * 6
    assert ray.get(numpy_loaded.remote(ray.put(big))) is False
    import numpy as np
    assert ray.get([numpy_loaded.remote(np.ones(1 << 20)) for _ in range(6)]) == [True] * 6
    print("NUMPY_LAZY_OK", flush=True)
elif command == "where":
    print("TASKS_HERE" if ray.get(pid.remote()) == os.getpid() else "TASKS_ELSEWHERE", flush=True)
