"""``get_runtime_context()``: who and where the calling code runs (Ray's ``ray.runtime_context``)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ._private import context, runtime


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
        return (session.rank.to_bytes(4, "big") + os.getpid().to_bytes(4, "big")).hex().ljust(56, "0")

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
        return {"job_id": self.get_job_id(), "node_id": self.get_node_id(),
                "task_id": self.get_task_id(), "actor_id": self.get_actor_id(),
                "namespace": self.namespace}


_context = RuntimeContext()


def get_runtime_context() -> RuntimeContext:
    """The runtime context; does not start hpcray."""
    return _context
