"""A first hpcray program: the same file runs with `python` or under `mpiexec -n N`.

    python examples/quickstart.py
    mpiexec -n 4 python examples/quickstart.py
"""

import time

import hpcray as ray

ray.init()  # under mpiexec, only rank 0 continues past this line; the others serve tasks


@ray.remote
def square(x):
    return x * x


@ray.remote
def total(values):
    return sum(values)


@ray.remote
def where():
    ctx = ray.get_runtime_context()
    print(f"hello from rank {ctx.get_rank()}")
    return ctx.get_rank()


started = time.perf_counter()
squares = [square.remote(i) for i in range(100)]
result = ray.get(total.remote(ray.get(squares)))
assert result == sum(i * i for i in range(100))
ranks = sorted(set(ray.get([where.remote() for _ in range(8)])))
print(f"sum of squares = {result}, computed on ranks {ranks} "
      f"in {time.perf_counter() - started:.3f} s; cluster: {ray.cluster_resources().get('CPU')} CPUs")
