"""hpcray: Ray's core API on MPI. ``import hpcray as ray`` and run the same program with
``python app.py`` (one process) or ``mpiexec -n N python app.py`` (rank 0 drives, the other ranks
serve tasks). See the README for what runs where."""

import inspect
from typing import Any, Dict

import cloudpickle  # noqa: F401 (Ray's `from ray import cloudpickle`)

from . import exceptions, util
from ._private import config as _config
from ._private.api import (available_resources, cancel, cluster_resources, get, get_gpu_ids, init,
                           is_initialized, nodes, put, shutdown, timeline, wait)
from ._private.generators import DynamicObjectRefGenerator, ObjectRefGenerator
from ._private.object_ref import ObjectRef
from .actor import ActorClass, ActorHandle, get_actor, kill, method
from .remote_function import RemoteFunction
from .runtime_context import get_runtime_context

__version__ = "0.1.0"
ObjectID = ObjectRef  # Ray's older name

if _config.ray_alias_wanted():  # a process of a `python -m hpcray` job: `import ray` is hpcray
    from ._private import ray_alias as _ray_alias
    _ray_alias.install()


def remote(*args: Any, **kwargs: Any) -> Any:
    """``@remote``, ``@remote(**options)`` or ``remote(function_or_class)``."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args or not kwargs:
        raise TypeError("The @hpcray.remote decorator must be applied either with no arguments and no "
                        "parentheses, for example '@hpcray.remote', or it must be applied using some of "
                        "the arguments in the list of remote() options, for example "
                        "'@hpcray.remote(num_returns=2, resources={\"CustomResource\": 1})'.")

    def decorator(function_or_class: Any) -> Any:
        return _make_remote(function_or_class, kwargs)
    return decorator


def _make_remote(target: Any, options: Dict[str, Any]) -> Any:
    if inspect.isclass(target):
        return ActorClass(target, options)
    if inspect.isfunction(target) or inspect.isbuiltin(target) or callable(target):
        return RemoteFunction(target, options)
    raise TypeError("The @hpcray.remote decorator must be applied to either a function or a class.")


__all__ = ["init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "ObjectRef",
           "ObjectRefGenerator", "DynamicObjectRefGenerator",
           "ActorClass", "ActorHandle", "get_actor", "kill", "method",
           "RemoteFunction", "cluster_resources", "available_resources", "nodes", "get_gpu_ids",
           "get_runtime_context", "timeline", "exceptions", "util", "__version__", "ObjectID", "cloudpickle"]
