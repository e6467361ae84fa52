"""Tasks that submit tasks and block in get(): a recursive tree far larger than the job."""

import hpcray as ray

ray.init()


@ray.remote
def fib(n):
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))


print("fib(15) =", ray.get(fib.remote(15)))
