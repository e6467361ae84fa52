"""A Ray program, unchanged (it imports ``ray``): run it with ``python -m hpcray ray_program.py``.

Prints ``RAY_IS <module name> ...``, ``HELPER ...`` (a module next to it that imports ray itself,
imported by a task on the rank that runs it) and ``OK`` when every check holds.
"""

import sys

import ray
import ray.exceptions
from ray import cloudpickle
from ray.util import ActorPool
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

ray.init()


@ray.remote
def square(x):
    return x * x


@ray.remote
def fails():
    raise ValueError("boom")


@ray.remote
def uses_helper():
    import ray_helper  # next to this file; it does `import ray` on the rank that runs the task
    return ray_helper.where()


@ray.remote
class Doubler:
    def double(self, x):
        return 2 * x


group = placement_group([{"CPU": 1}], strategy="PACK")
ray.get(group.ready())
assert ray.get(square.options(scheduling_strategy=PlacementGroupSchedulingStrategy(group)).remote(4)) == 16
remove_placement_group(group)
pool = ActorPool([Doubler.remote(), Doubler.remote()])
assert sorted(pool.map(lambda actor, value: actor.double.remote(value), range(4))) == [0, 2, 4, 6]
try:
    ray.get(fails.remote())
    raise AssertionError("no error")
except ray.exceptions.RayTaskError as exc:
    assert isinstance(exc, ValueError) and "boom" in str(exc)
assert cloudpickle.loads(cloudpickle.dumps(21)) == 21
try:
    import ray.data  # noqa: F401
    raise AssertionError("ray.data imported")
except ModuleNotFoundError as exc:
    assert "hpcray" in str(exc), exc
print("ARGS", sys.argv[1:])
print("HELPER", ray.get(uses_helper.remote()))
print("RAY_IS", ray.__name__, ray.ObjectID is ray.ObjectRef)
print("OK")
