"""The public core API (init, get, put, wait, remote, ...), validated here and carried out by the
session's client. ``hpcray/__init__.py`` re-exports these names."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from .. import exceptions
from . import context, runtime
from .generators import ObjectRefGenerator
from .interrupts import shielded
from .object_ref import ObjectRef
from .config import TIMELINE_WAIT_S
from .timeline import chrome_trace, write_trace

_INIT_KEYWORDS = {
    "address", "num_cpus", "num_gpus", "resources", "labels", "object_store_memory", "local_mode",
    "ignore_reinit_error", "include_dashboard", "dashboard_host", "dashboard_port", "job_config",
    "configure_logging", "logging_level", "logging_format", "logging_config", "log_to_driver",
    "namespace", "runtime_env", "storage", "enable_resource_isolation", "system_reserved_cpu",
    "system_reserved_memory", "_node_ip_address", "_temp_dir", "_system_config", "_metrics_export_port",
    "_redis_password", "_plasma_directory", "_node_name", "_enable_object_reconstruction",
    "_driver_object_store_memory", "_memory", "_redis_max_memory", "_java_worker_options",
    "_tracing_startup_hook", "_skip_env_hook", "_cgroup_path", "_include_log_monitor",
}


class RuntimeInfo(dict):
    """What ``init()`` returns (Ray's RayContext): a dict with ``address_info`` fields, usable
    as a context manager that shuts down on exit."""

    @property
    def address_info(self) -> Dict[str, Any]:
        return dict(self)

    @property
    def dashboard_url(self) -> Optional[str]:
        return None

    def disconnect(self) -> None:
        shutdown()

    def __enter__(self) -> "RuntimeInfo":
        return self

    def __exit__(self, *exc: Any) -> None:
        shutdown()


def init(address: Optional[str] = None, *, num_cpus: Optional[float] = None, num_gpus: Optional[float] = None,
         resources: Optional[Dict[str, float]] = None, namespace: Optional[str] = None,
         runtime_env: Optional[Dict[str, Any]] = None, ignore_reinit_error: bool = False,
         **kwargs: Any) -> RuntimeInfo:
    """Start hpcray. Under ``mpiexec``, only rank 0 returns; other ranks serve tasks here until
    the driver's process ends, so call ``init()`` near the top of the program.

    Single rank (no MPI launcher): ``num_cpus`` (default: the CPUs this process may use),
    ``num_gpus`` and ``resources`` size the local executor. With worker ranks (spawned, or under
    ``mpiexec``, where every rank calls ``init()`` with the same amounts) they are the job's
    totals, shared out over the worker ranks. ``address`` and Ray's other keywords are accepted
    and ignored.
    """
    unknown = set(kwargs) - _INIT_KEYWORDS
    if unknown:
        raise TypeError(f"init() got unknown keyword argument(s): {', '.join(sorted(unknown))}")
    for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
            raise ValueError(f"init(): {name} must be a number >= 0, got {value!r}")
    if resources is not None:
        if not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and v >= 0 for k, v in resources.items()):
            raise ValueError(f"init(): resources must map names to amounts >= 0, got {resources!r}")
        if {"CPU", "GPU"} & set(resources):
            raise ValueError("init(): use num_cpus/num_gpus instead of CPU/GPU in resources")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"init(): namespace must be a str, got {type(namespace).__name__}")
    job_env = None
    if runtime_env:
        from .options import _check_runtime_env
        problem = _check_runtime_env(runtime_env)
        if problem:
            raise ValueError(f"init(): {problem}")
        job_env = runtime_env.get("env_vars")
    setup_hook = (runtime_env or {}).get("worker_process_setup_hook")
    with runtime.PROCESS.lock:
        existing = runtime.current()
        if existing is None:
            session = runtime.init_session(num_cpus, num_gpus, resources, namespace, job_env, setup_hook)
    if existing is None:
        if session is None:  # a worker rank: it serves tasks until the driver's process ends
            runtime.serve_worker_rank()
        return _info(session)
    if ignore_reinit_error:
        return _info(existing)
    raise RuntimeError("Maybe you called hpcray.init twice by accident? This error can be "
                       "suppressed by passing in 'ignore_reinit_error=True' or by calling "
                       "'hpcray.shutdown()' prior to 'hpcray.init()'.")


def _info(session: runtime.Session) -> RuntimeInfo:
    return RuntimeInfo(node_ip_address=session.host, node_id=session.node_id, session_dir=None,
                       gcs_address=None, address=None, webui_url=None, job_id=session.job_id_hex)


@shielded
def shutdown(_exiting_interpreter: bool = False) -> None:
    """End the session. A later ``init()`` in the same process starts a new one. A Ctrl-C while
    it runs is raised once the session has ended whole (it waits at most HPCRAY_EXIT_TIMEOUT_S for
    the worker ranks): one in between left them serving the old session."""
    session = runtime.current()
    if session is not None and session.role != "driver":
        return  # inside a task on a worker rank: the driver decides
    runtime.shutdown_session()


def is_initialized() -> bool:
    return runtime.current() is not None


def ensure_session() -> runtime.Session:
    """The live session; like recent Ray, the first ``.remote()`` or ``put`` starts one."""
    session = runtime.current()
    if session is None:
        init()
        session = runtime.current()
    return session


def live_session(call: str) -> runtime.Session:
    """The live session for a call on existing refs (``get``, ``wait``, ``cancel``): without one,
    those refs belong to a session that ended, and a new session would not know them."""
    session = runtime.current()
    if session is None:
        raise exceptions.RaySystemError(
            f"{call}: hpcray is not initialized. The ObjectRefs given belong to a session that "
            "ended with shutdown() (or was never started); call hpcray.init() and make new ones.")
    return session


def _check_timeout(timeout: Optional[float]) -> None:
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
            raise TypeError(f"timeout must be a number or None, got {type(timeout).__name__}")
        if timeout < 0:
            raise ValueError(f"The 'timeout' argument must be non-negative, got {timeout}")


@shielded
def get(object_refs: Union[ObjectRef, Sequence[ObjectRef]], *, timeout: Optional[float] = None) -> Any:
    """The value(s) of one ObjectRef or a list of them, in order.

    Raises the task's error (both RayTaskError and the user's type) as soon as any listed
    object is known to hold one; ``GetTimeoutError`` when ``timeout`` seconds pass.
    """
    _check_timeout(timeout)
    single = isinstance(object_refs, ObjectRef)
    if single:
        refs = [object_refs]
    elif isinstance(object_refs, (list, tuple)) and all(isinstance(r, ObjectRef) for r in object_refs):
        refs = list(object_refs)
    else:
        raise ValueError(f"Invalid type of object refs, {type(object_refs).__name__}, is given. "
                         "'object_refs' must either be an ObjectRef or a list of ObjectRefs.")
    if not refs:
        return []
    session = live_session("get()")
    values = session.client.get(refs, timeout)
    return values[0] if single else values


@shielded
def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store ``value`` and return an ObjectRef to it (putting an ObjectRef raises TypeError)."""
    session = ensure_session()
    return session.client.put(value)


@shielded
def wait(object_refs: List[Union[ObjectRef, ObjectRefGenerator]], *, num_returns: int = 1,
         timeout: Optional[float] = None, fetch_local: bool = True) -> Tuple[List[Any], List[Any]]:
    """Split refs into (ready, not ready) once ``num_returns`` are ready or ``timeout`` passes.
    Both lists keep the input order. With ``fetch_local=False`` a large value that lives on
    another rank counts as ready without being copied here. A generator is ready when its next
    item is there or its stream has ended."""
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    ids = _plain_ids(object_refs)
    keys = set(ids) if ids is not None else _wait_keys(object_refs)
    if not isinstance(num_returns, int) or isinstance(num_returns, bool):
        raise TypeError(f"num_returns must be an int, got {type(num_returns).__name__}")
    _check_timeout(timeout)
    if not isinstance(fetch_local, bool):
        raise TypeError("fetch_local must be a bool")
    if not object_refs:
        return [], []
    if len(keys) != len(object_refs):
        raise ValueError("Wait requires a list of unique object refs.")
    if num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided to wait: "
                         f"{num_returns} > {len(object_refs)}")
    session = live_session("wait()")
    return session.client.wait(object_refs, num_returns, timeout, fetch_local, ids)


def _plain_ids(object_refs: List[Any]) -> Optional[List[bytes]]:
    """The refs' ids when every one is a plain ObjectRef (most calls), found in C loops: a wait
    on 1,000 ready refs costs little more than reading them. Else None."""
    if set(map(type, object_refs)) == {ObjectRef}:
        return [ref._id for ref in object_refs]
    return None


def _wait_keys(object_refs: List[Any]) -> set:
    """Each ref's id (a generator: itself), to see duplicates; a TypeError for anything else."""
    keys = set()
    add = keys.add
    for ref in object_refs:
        if isinstance(ref, ObjectRef):
            add(ref.binary())
        elif isinstance(ref, ObjectRefGenerator):
            add(ref)
        else:
            raise TypeError(f"wait() expected a list of ObjectRef or ObjectRefGenerator, got a list "
                            f"containing {type(ref).__name__}")
    return keys


@shielded
def cancel(object_ref: Union[ObjectRef, ObjectRefGenerator], *, force: bool = False,
           recursive: bool = True) -> None:
    """Cancel the task that makes ``object_ref`` (or a generator's stream: it ends with
    TaskCancelledError after the items made so far). Not started: it never runs. Running: it gets a
    KeyboardInterrupt in its thread (seen at its next Python instruction, or within 0.1 s while it
    waits in ``get``). Its ``get`` raises TaskCancelledError; finished tasks are left alone.
    ``recursive`` cancels the tasks it submitted too. Actor calls: a queued call is dropped, a
    running async call is cancelled, a running sync call finishes.

    hpcray differs from Ray for ``force=True``: a rank process is never killed, so it acts like
    ``force=False``.
    """
    if not isinstance(object_ref, (ObjectRef, ObjectRefGenerator)):
        raise TypeError(f"cancel() only supports ObjectRefs of tasks, got {type(object_ref).__name__}")
    if not isinstance(force, bool) or not isinstance(recursive, bool):
        raise TypeError("cancel(): force and recursive must be bools")
    session = live_session("cancel()")
    session.client.cancel(object_ref.task_id(), force, recursive)


def query(name: str) -> Any:
    """Ask the scheduler for a view of its state ("resources", "nodes", "stats")."""
    return ensure_session().client.query(name)


def cluster_resources() -> Dict[str, float]:
    """Total resources of the job's worker ranks (single rank: of this process)."""
    return query("resources")["total"]


def available_resources() -> Dict[str, float]:
    """Resources not held by running tasks right now."""
    return query("resources")["available"]


def nodes() -> List[Dict[str, Any]]:
    """One dict per host, with Ray's keys (NodeID, Alive, NodeManagerAddress, Resources, ...)."""
    return query("nodes")


def timeline(filename: Optional[str] = None) -> Optional[List[Dict[str, Any]]]:
    """Ray's ``ray.timeline()``: the job's tasks, actor calls and waits as Chrome trace events
    (open the file in Perfetto or chrome://tracing): a process per rank, named with its host, a
    thread per thread. Written to ``filename`` as JSON, or returned as a list without one."""
    if filename is not None and not isinstance(filename, (str, os.PathLike)):
        raise TypeError(f"timeline(filename=...) must be a path or None, got {type(filename).__name__}")
    session = live_session("timeline()")
    if not session.config.timeline_events:
        raise RuntimeError("hpcray.timeline(): recording is off in this session (HPCRAY_TIMELINE_EVENTS=0)")
    trace = chrome_trace(session.client.query("timeline", timeout=TIMELINE_WAIT_S))
    if filename is None:
        return trace
    write_trace(filename, trace)
    return None


def get_gpu_ids() -> List[Union[int, str]]:
    """GPU ids assigned to the running task (on the driver: those this process may see)."""
    ctx = context.current()
    if ctx is not None:
        ids = ctx.gpu_ids
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v for v in visible.split(",") if v.strip()] if visible else []
    return [int(i) if str(i).isdigit() else i for i in ids]


__all__ = ["init", "shutdown", "is_initialized", "get", "put", "wait", "cancel", "cluster_resources",
           "available_resources", "nodes", "get_gpu_ids", "exceptions"]
