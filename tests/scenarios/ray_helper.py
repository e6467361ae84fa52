"""A module of a Ray program (ray_program.py) that imports ray itself."""

import ray


def where():
    return ray.__name__, ray.get_runtime_context().get_rank()
