"""Estimate pi with many tasks that each return a numpy array (objects of any size move)."""

import numpy as np

import hpcray as ray

ray.init()


@ray.remote
def sample(seed, n):
    rng = np.random.default_rng(seed)
    points = rng.random((n, 2))
    return np.count_nonzero((points ** 2).sum(axis=1) <= 1.0)


@ray.remote
def tree_sum(*counts):
    return sum(counts)


batches = [sample.remote(seed, 200_000) for seed in range(64)]
while len(batches) > 1:  # reduce in a tree of tasks; refs are passed, values never visit the driver
    batches = [tree_sum.remote(*batches[i:i + 8]) for i in range(0, len(batches), 8)]
inside = ray.get(batches[0])
print(f"pi ~ {4 * inside / (64 * 200_000):.5f}")
