"""Data-parallel training among actors with MPI collectives (Ray's ``ray.util.collective`` API).

    python examples/collective_allreduce.py
    mpiexec -n 5 python examples/collective_allreduce.py

Each trainer holds a shard of the data and a copy of a linear model; every step it computes its
gradient, and one ``allreduce`` sums the gradients of all trainers, so the copies stay equal.
With one trainer per rank (a SPREAD placement group) the allreduce runs on an MPI communicator of
the trainers' ranks; trainers that share a process fall back to the object store.
"""

import numpy as np

import hpcray as ray
from hpcray.util import collective as col
from hpcray.util.placement_group import placement_group
from hpcray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init()

TRAINERS = max(1, min(4, int(ray.cluster_resources().get("CPU", 1))))
FEATURES = 8
TRUE_WEIGHTS = np.arange(1.0, FEATURES + 1)


@ray.remote(num_cpus=1)
class Trainer:
    def __init__(self, rank: int, size: int, seed: int):
        col.init_collective_group(size, rank, backend="mpi", group_name="train")
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(2000, FEATURES))
        self.y = self.x @ TRUE_WEIGHTS + rng.normal(scale=0.1, size=2000)
        self.weights = np.zeros(FEATURES)
        self.size = size

    def step(self, learning_rate: float) -> float:
        error = self.x @ self.weights - self.y
        gradient = self.x.T @ error / len(self.y)
        col.allreduce(gradient, group_name="train")  # the sum over every trainer's shard
        self.weights -= learning_rate * gradient / self.size
        return float(np.mean(error ** 2))

    def weights_and_backend(self):
        return self.weights, col.get_group_backend("train")


group = placement_group([{"CPU": 1}] * TRAINERS, strategy="SPREAD")
ray.get(group.ready())
trainers = [Trainer.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote(i, TRAINERS, i)
            for i in range(TRAINERS)]
for step in range(100):
    losses = ray.get([t.step.remote(0.1) for t in trainers])
results = ray.get([t.weights_and_backend.remote() for t in trainers])
weights = [w for w, _ in results]
assert all(np.array_equal(weights[0], w) for w in weights), "the trainers' models drifted apart"
assert np.allclose(weights[0], TRUE_WEIGHTS, atol=0.05), weights[0]
print(f"{TRAINERS} trainers ({results[0][1]} allreduce): loss {np.mean(losses):.4f}, "
      f"weights {np.round(weights[0], 2).tolist()}")
