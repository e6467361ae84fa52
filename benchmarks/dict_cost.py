"""What a plain dict costs per operation as it grows: the memory side of the scale case.

Each task the driver tracks sits in a few dicts and sets (the scheduler's task and object tables,
the loop's ref counts, the client's store), keyed by 20-byte ids like these. This inserts n such
keys with a small record each, touches each once in order, and deletes them, and prints the
time per key (best of 3, cyclic GC off). No hpcray code runs: it isolates how the cost of the
same O(1) operations grows once the tables outgrow the CPU caches.

    python benchmarks/dict_cost.py
"""

import gc
import struct
import time


def per_key_ns(n: int) -> tuple:
    keys = [struct.pack(">IIQI", 1, 0, i, 1) for i in range(n)]
    table = {}
    started = time.perf_counter()
    for key in keys:
        table[key] = [key, 0, None]
    inserted = time.perf_counter()
    for key in keys:
        table[key][1] += 1
    touched = time.perf_counter()
    for key in keys:
        del table[key]
    deleted = time.perf_counter()
    return tuple((b - a) / n * 1e9 for a, b in ((started, inserted), (inserted, touched), (touched, deleted)))


def main() -> None:
    gc.disable()
    for n in (10_000, 100_000, 1_000_000):
        insert, touch, delete = min((per_key_ns(n) for _ in range(3)), key=sum)
        print(f"{n:>9,} keys: insert {insert:4.0f} ns, touch {touch:4.0f} ns, delete {delete:4.0f} ns per key")


if __name__ == "__main__":
    main()
