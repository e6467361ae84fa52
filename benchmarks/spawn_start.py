"""Time ``init()`` to the first task's result for ``python app.py`` (workers spawned by init()),
in a fresh process: ``python benchmarks/spawn_start.py`` prints one line. Run it alternately from
two checkouts (``PYTHONPATH=<checkout>``) to compare them; see benchmarks/README.md."""

import time

import hpcray

start = time.perf_counter()
hpcray.init()


@hpcray.remote
def first():
    return 1


hpcray.get(first.remote())
print(f"init() to first result {time.perf_counter() - start:.3f} s", flush=True)
hpcray.shutdown()
