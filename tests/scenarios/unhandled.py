"""An error in a dropped, never-read ref is reported once; a read one is not."""

import gc
import time

import hpcray as ray

ray.init()


@ray.remote
def fail(tag):
    raise ValueError(f"boom-{tag}")


ref = fail.remote("dropped")
ray.wait([ref], fetch_local=False)
del ref
handled = fail.remote("handled")
try:
    ray.get(handled)
except ValueError:
    pass
del handled
gc.collect()
time.sleep(1.0)
print("UNHANDLED_DONE", flush=True)
