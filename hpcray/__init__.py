"""hpcray: Ray's core API on MPI. ``import hpcray as ray`` and run the same program with
``python app.py`` (one process) or ``mpiexec -n N python app.py`` (rank 0 drives, the other ranks
serve tasks). See the README for what runs where."""

from . import exceptions, util
from ._private.api import (available_resources, cancel, cluster_resources, get, get_gpu_ids, init,
                           is_initialized, nodes, put, remote, shutdown, wait)
from ._private.object_ref import ObjectRef
from .actor import ActorClass, ActorHandle, get_actor, kill, method
from .remote_function import RemoteFunction
from .runtime_context import get_runtime_context

__version__ = "0.1.0"

__all__ = ["init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "cancel", "ObjectRef",
           "ActorClass", "ActorHandle", "get_actor", "kill", "method",
           "RemoteFunction", "cluster_resources", "available_resources", "nodes", "get_gpu_ids",
           "get_runtime_context", "exceptions", "util", "__version__"]
