"""Large objects when the node-shared arena is small or absent.

    python arena_fallback.py tiny-shm | full      (also under mpiexec -n 3)

tiny-shm: /dev/shm reports 10 MiB free (os.statvfs is patched on every rank before init):
          no arena; values still move (point-to-point); the host says so once in the log.
full:     HPCRAY_ARENA_BYTES=64 MiB: values that do not fit stay in private memory and move
          point-to-point; those that fit use the arena; the arena is empty again at the end.
Prints FALLBACK_OK and the arena state.
"""

import gc
import os
import sys
import time

import numpy as np

mode = sys.argv[1]
if mode == "tiny-shm":
    real_statvfs = os.statvfs

    class Tiny:
        f_bavail, f_frsize = 10 * 256, 4096  # 10 MiB

    os.statvfs = lambda path: Tiny() if str(path).startswith("/dev/shm") else real_statvfs(path)
else:
    os.environ["HPCRAY_ARENA_BYTES"] = str(64 << 20)

import hpcray as ray  # noqa: E402
from hpcray._private import serialization  # noqa: E402

ray.init()
MB = 1 << 20


@ray.remote
def make(nbytes, fill):
    return np.full(nbytes // 8, fill)


@ray.remote
def where():
    arena = serialization._Arena.arena
    return None if arena is None else arena.used_bytes()


big = ray.get(make.remote(100 * MB, 3.0))  # bigger than a 64 MiB segment, or no arena at all
assert float(big[-1]) == 3.0 and big.size == 100 * MB // 8
small = ray.get(make.remote(4 * MB, 5.0))
assert float(small.sum()) == 5.0 * MB // 2
put_big = ray.put(np.full(100 * MB // 8, 7.0))
assert float(ray.get(make.remote(8, 0.0)).sum()) == 0.0
assert float(ray.get(put_big)[0]) == 7.0
arena = serialization._Arena.arena
if mode == "tiny-shm":
    assert arena is None, "an arena was made although /dev/shm is tiny"
    assert ray.get(where.remote()) is None
elif ray.nodes()[0].get("Ranks", [0]) != [0]:  # under MPI
    assert arena is not None and len(arena.segment) == 64 << 20
    assert serialization.serialize(np.ones(MB), shared=True).placement is not None  # 8 MiB fits
    assert serialization.serialize(np.ones(100 * MB // 8), shared=True).placement is None  # does not
    del big, small, put_big
    gc.collect()
    deadline = time.monotonic() + 10
    while arena.used_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert arena.used_bytes() == 0, arena.used_bytes()
print("FALLBACK_OK", "arena" if arena is not None else "no-arena", flush=True)
