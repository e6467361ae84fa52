"""A value over 2 GiB moves worker -> driver and driver -> worker (MPI counts are 32-bit)."""

import numpy as np

import hpcray as ray

ray.init()
COUNT = (2 << 30) // 8 + 1024  # 2 GiB + 8 KiB of float64


@ray.remote
def make():
    array = np.ones(COUNT)
    array[-1] = 7.0
    return array


@ray.remote
def last_and_size(array):
    return float(array[-1]), array.nbytes


value = ray.get(make.remote())
assert value.nbytes > 2 << 30 and value[-1] == 7.0 and value[0] == 1.0
assert ray.get(last_and_size.remote(ray.put(value))) == (7.0, value.nbytes)
print("HUGE_OK", flush=True)
