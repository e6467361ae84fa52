"""What the running task looks like from inside: a thread-local context, its printed-line prefix,
and its ``runtime_env`` environment variables.

Tasks of one rank run in threads of one process, so two things that are process-wide in Ray's
one-task-per-process workers are made per thread here:
- ``os.environ`` becomes a mapping that shows the running task's ``env_vars`` on top of the real
  environment, to that task's thread only (``os.environ`` and ``os.getenv``; a subprocess started
  without ``env=`` sees the real environment);
- ``sys.stdout``/``sys.stderr`` prefix each line a task prints with ``(name pid=…, rank=…)``.
"""

from __future__ import annotations

import contextvars
import os
import sys
import threading
from typing import Any, Dict, Optional

from .placement import InGroup

# A ContextVar, not a thread-local: each thread has its own context, and so does each asyncio
# task of an async actor, so concurrent calls on one event loop see their own context.
_current: "contextvars.ContextVar[Optional[TaskContext]]" = contextvars.ContextVar("hpcray_task", default=None)


class TaskContext:
    """The task or actor call the current thread is running."""

    __slots__ = ("task_id", "name", "resources", "env", "rank", "_prefix", "gpu_ids", "actor_id",
                 "actor_handle", "group", "function_name")

    def __init__(self, task_id: bytes, name: str, resources: Dict[str, float],
                 env: Optional[Dict[str, str]], rank: int, gpu_ids: Optional[list] = None,
                 actor_id: Optional[bytes] = None, actor_handle: Optional[tuple] = None,
                 strategy: Any = None):
        self.task_id = task_id
        self.name = name
        self.resources = resources
        self.env = env
        self.rank = rank
        self._prefix: Optional[str] = None  # made when the task first prints
        self.gpu_ids = gpu_ids or []
        self.actor_id = actor_id
        self.actor_handle = actor_handle  # (actor id, meta blob, handle object id)
        # the placement.InGroup it runs in, or None
        self.group = strategy if type(strategy) is InGroup else None
        self.function_name: Optional[str] = None  # module.qualname, once the function is loaded

    @property
    def prefix(self) -> str:
        """What each line the task prints starts with."""
        if self._prefix is None:
            self._prefix = f"({self.name} pid={os.getpid()}, rank={self.rank}) "
        return self._prefix


def current() -> Optional[TaskContext]:
    return _current.get()


def current_task_id() -> Optional[bytes]:
    ctx = _current.get()
    return ctx.task_id if ctx is not None else None


def set_current(ctx: Optional[TaskContext]) -> None:
    _current.set(ctx)


class TaskEnviron(os._Environ):  # type: ignore[name-defined]
    """``os.environ`` with the current task's ``env_vars`` laid over it, for its thread only."""

    def __init__(self, base: "os._Environ"):  # type: ignore[name-defined]
        super().__init__(base._data, base.encodekey, base.decodekey, base.encodevalue, base.decodevalue)
        self.base = base

    @staticmethod
    def _overlay() -> Optional[Dict[str, str]]:
        ctx = _current.get()
        return ctx.env if ctx is not None else None

    def __getitem__(self, key):
        overlay = self._overlay()
        if overlay and key in overlay:
            return overlay[key]
        return super().__getitem__(key)

    def __contains__(self, key):
        overlay = self._overlay()
        return bool(overlay and key in overlay) or super().__contains__(key)

    def __iter__(self):
        overlay = self._overlay()
        seen = set()
        if overlay:
            for key in overlay:
                seen.add(key)
                yield key
        for key in super().__iter__():
            if key not in seen:
                yield key

    def __len__(self):
        return sum(1 for _ in self)

    def copy(self):
        return dict(self)


#: where a copy of every line a task prints goes too (HPCRAY_LOG_DIR's file of this rank), or None
_copy_to: list = []


def copy_task_output_to(stream: Any) -> None:
    """Also write each line a task prints, with its prefix, to ``stream`` (None: stop)."""
    _copy_to[:] = [stream] if stream is not None else []


class PrefixedStream:
    """Wraps sys.stdout/sys.stderr: lines printed by a task get the task's prefix."""

    def __init__(self, stream):
        self._stream = stream
        self._local = threading.local()
        self._dirty = True  # written since the last flush (the executor flushes after every task)

    def write(self, text: str) -> int:
        self._dirty = True
        ctx = _current.get()
        if ctx is None:
            return self._stream.write(text)
        pending = getattr(self._local, "pending", "") + text
        lines = pending.split("\n")
        self._local.pending = lines.pop()
        if lines:
            self._write_out("".join(ctx.prefix + line + "\n" for line in lines))
        return len(text)

    def _write_out(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
        for copy in _copy_to:
            copy.write(text)
            copy.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        ctx = _current.get()
        pending = getattr(self._local, "pending", "")
        if pending and ctx is not None:
            self._local.pending = ""
            self._write_out(ctx.prefix + pending + "\n")
        else:
            self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def install_task_io() -> None:
    """Put the per-task environment and output prefixing in place (idempotent)."""
    if not isinstance(os.environ, TaskEnviron):
        os.environ = TaskEnviron(os.environ)
    if not isinstance(sys.stdout, PrefixedStream):
        sys.stdout = PrefixedStream(sys.stdout)
    if not isinstance(sys.stderr, PrefixedStream):
        sys.stderr = PrefixedStream(sys.stderr)


def uninstall_task_io() -> None:
    if isinstance(os.environ, TaskEnviron):
        os.environ = os.environ.base
    if isinstance(sys.stdout, PrefixedStream):
        sys.stdout = sys.stdout._stream
    if isinstance(sys.stderr, PrefixedStream):
        sys.stderr = sys.stderr._stream


def qualified_name(obj: Any) -> str:
    """``module.qualname`` of a function or class (get_task_function_name)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"
