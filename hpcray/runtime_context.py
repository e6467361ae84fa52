"""``get_runtime_context()``: who and where the calling code runs (Ray's ``ray.runtime_context``)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ._private import context, runtime
from ._private.ids import BinaryID
from ._private.resources import worker_id_of


class RuntimeContext:
    """A view of the current job, node (host), rank, task and actor."""

    def _session(self) -> runtime.Session:
        session = runtime.current()
        assert session is not None, "Ray has not been initialized"
        return session

    def get_job_id(self) -> str:
        """The job id as a hex string."""
        return self._session().job_id_hex

    def get_node_id(self) -> str:
        """The id of the host this code runs on (a node in Ray's terms is a host)."""
        return self._session().node_id

    def get_worker_id(self) -> str:
        session = self._session()
        return worker_id_of(session.rank, os.getpid())

    def get_rank(self) -> int:
        """The MPI rank of this process (0: the driver). hpcray only."""
        return self._session().rank

    def get_task_id(self) -> Optional[str]:
        """The running task's id, or None on the driver."""
        self._session()
        ctx = context.current()
        return ctx.task_id.hex() if ctx is not None else None

    def get_actor_id(self) -> Optional[str]:
        self._session()
        ctx = context.current()
        return ctx.actor_id.hex() if ctx is not None and ctx.actor_id else None

    def get_actor_name(self) -> Optional[str]:
        return None

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return False

    @property
    def current_actor(self) -> Any:
        """A handle to the actor running this code."""
        ctx = context.current()
        if ctx is None or ctx.actor_handle is None:
            raise RuntimeError("This method is only available in an actor.")
        from .actor import _rebuild_handle
        from ._private.object_ref import ObjectRef
        actor_id, meta_blob, handle_id = ctx.actor_handle
        return _rebuild_handle(actor_id, meta_blob, ObjectRef(handle_id))

    @property
    def namespace(self) -> Optional[str]:
        return self._session().namespace

    def get_assigned_resources(self) -> Dict[str, float]:
        """Resources held by the running task ({} on the driver)."""
        self._session()
        ctx = context.current()
        return dict(ctx.resources) if ctx is not None else {}

    def get_accelerator_ids(self) -> Dict[str, List[str]]:
        ctx = context.current()
        return {"GPU": [str(g) for g in ctx.gpu_ids] if ctx is not None else []}

    def get_placement_group_id(self) -> Optional[str]:
        return None

    @property
    def should_capture_child_tasks_in_placement_group(self) -> bool:
        return False

    @property
    def runtime_env(self) -> Dict[str, Any]:
        ctx = context.current()
        return {"env_vars": dict(ctx.env)} if ctx is not None and ctx.env else {}

    def get_runtime_env_string(self) -> str:
        import json
        return json.dumps(self.runtime_env)

    def get(self) -> Dict[str, Any]:
        """Ray's dict: job, node and namespace; the task and actor ids only inside a task or
        actor (the driver has none)."""
        info: Dict[str, Any] = {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                                "namespace": self.namespace}
        if context.current() is not None:
            info["task_id"] = self.get_task_id()
            actor_id = self.get_actor_id()
            if actor_id is not None:
                info["actor_id"] = actor_id
        return info

    def get_task_name(self) -> Optional[str]:
        """The running task's name (its function's, or ``options(name=...)``; ``Class.method``
        for an actor call), or None on the driver."""
        self._session()
        ctx = context.current()
        return ctx.name if ctx is not None else None

    def get_task_function_name(self) -> Optional[str]:
        """The running task's function as ``module.qualname`` (an actor call's method as
        ``module.Class.method``), or None on the driver."""
        self._session()
        ctx = context.current()
        return ctx.function_name if ctx is not None else None

    def is_canceled(self) -> bool:
        """Whether the running task or actor call was cancelled (``ray.cancel``)."""
        session = self._session()
        ctx = context.current()
        if ctx is None:
            return False
        if session.executor is not None and session.executor.was_cancelled(ctx.task_id):
            return True
        try:
            import asyncio
            task = asyncio.current_task()
        except RuntimeError:  # not in an event loop
            return False
        return bool(task is not None and task.cancelling())

    # Ray's older properties: ids as objects with hex()
    @property
    def job_id(self) -> "JobID":
        return JobID(bytes.fromhex(self.get_job_id()))

    @property
    def node_id(self) -> "NodeID":
        return NodeID(bytes.fromhex(self.get_node_id()))

    @property
    def task_id(self) -> Optional["TaskID"]:
        task_id = self.get_task_id()
        return TaskID(bytes.fromhex(task_id)) if task_id is not None else None

    @property
    def actor_id(self) -> Optional[Any]:
        from .actor import ActorID
        actor_id = self.get_actor_id()
        return ActorID(bytes.fromhex(actor_id)) if actor_id is not None else None


class JobID(BinaryID):
    __slots__ = ()


class NodeID(BinaryID):
    __slots__ = ()


class TaskID(BinaryID):
    __slots__ = ()


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    """The runtime context; like Ray, it starts hpcray (``init()``) if nothing did yet."""
    from ._private import api
    api.ensure_session()
    return _context
