"""Imported, it injects a bug into this process's loop: the executor fails on the EXECUTE of the
task ``explode``. The task ``arm`` imports it on the rank that runs it (spawned workers run none of
the script, and a task's function reaches them pickled by value, without its module)."""

import os

import hpcray as ray
from hpcray._private import executor

real_on_execute = executor.Executor.on_execute


def failing_on_execute(self, spec, blob, values, claim=None):
    if spec.name == "explode":
        raise RuntimeError(f"injected bug in the loop of pid {os.getpid()}")
    return real_on_execute(self, spec, blob, values, claim)


executor.Executor.on_execute = failing_on_execute


@ray.remote
def arm():
    import loop_bug  # noqa: F401
    return ray.get_runtime_context().get_rank()


@ray.remote
def explode():
    return "never"
