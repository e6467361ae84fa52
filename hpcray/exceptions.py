"""Exceptions raised by hpcray, with Ray's names and hierarchy (``ray.exceptions``).

Every class here pickles, so an error raised on one rank can be re-raised on another.
``RayTaskError.as_instanceof_cause()`` builds a class that is both a ``RayTaskError`` and the
user's exception type, so ``except ZeroDivisionError`` catches a remote division by zero.
"""

from __future__ import annotations

from typing import Any, Optional


class RayError(Exception):
    """Base class of every hpcray error."""


class CrossLanguageError(RayError):
    """Raised for errors across languages (never in hpcray, kept for Ray compatibility)."""


class RaySystemError(RayError):
    """An internal failure of the runtime."""

    def __init__(self, client_exc: Any = "", traceback_str: Optional[str] = None):
        self.client_exc = client_exc
        self.traceback_str = traceback_str
        super().__init__(client_exc, traceback_str)

    def __str__(self) -> str:
        text = f"System error: {self.client_exc}"
        if self.traceback_str:
            text += f"\ntraceback: {self.traceback_str}"
        return text


def _rebuild_task_error(function_name, traceback_str, cause, proctitle, pid, ip, rank, as_cause):
    err = RayTaskError(function_name, traceback_str, cause, proctitle, pid, ip, rank=rank)
    return err.as_instanceof_cause() if as_cause else err


class RayTaskError(RayError):
    """A task or actor method raised an exception.

    ``cause`` is the user's exception; the message carries the remote traceback and where the
    task ran (rank, host, pid).
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: Optional[BaseException],
        proctitle: Optional[str] = None,
        pid: Optional[int] = None,
        ip: Optional[str] = None,
        actor_repr: Optional[str] = None,
        actor_id: Optional[str] = None,
        rank: Optional[int] = None,
    ):
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ray::{function_name}()"
        self.pid = pid
        self.ip = ip
        self.rank = rank
        self.actor_repr = actor_repr
        self.actor_id = actor_id
        super().__init__(function_name, traceback_str, cause, proctitle, pid, ip)

    def __reduce__(self):
        as_cause = type(self) is not RayTaskError
        return (
            _rebuild_task_error,
            (self.function_name, self.traceback_str, self.cause, self.proctitle, self.pid,
             self.ip, self.rank, as_cause),
        )

    def as_instanceof_cause(self) -> "RayTaskError":
        """Return an error that is an instance of both RayTaskError and the cause's class.

        Not wrapped (the plain RayTaskError is returned) when the cause is itself a RayError or
        its class cannot be subclassed; ``.cause`` still holds it.
        """
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(RayTaskError, cause_cls) or (
                issubclass(cause_cls, RayError) and cause_cls is not TaskCancelledError):
            return self  # (a running task that was cancelled is both, as on Ray)
        try:
            cls = _dual_class(cause_cls)
            try:
                err = cls.__new__(cls)
            except TypeError:  # MemoryError and others refuse __new__ through a subclass of two
                err = BaseException.__new__(cls)
            RayTaskError.__init__(
                err, self.function_name, self.traceback_str, self.cause, self.proctitle,
                self.pid, self.ip, self.actor_repr, self.actor_id, self.rank,
            )
            return err
        except TypeError:
            return self

    def __str__(self) -> str:
        where = f"pid={self.pid}, ip={self.ip}"
        if self.rank is not None:
            where += f", rank={self.rank}"
        head = f"{self.proctitle} ({where})"
        if self.actor_repr:
            head += f", actor={self.actor_repr}"
        body = self.traceback_str or repr(self.cause)
        return f"{head}\n{body}"


_dual_classes: dict = {}


def _dual_class(cause_cls: type) -> type:
    cls = _dual_classes.get(cause_cls)
    if cls is None:
        def __getattr__(self, name):
            cause = self.__dict__.get("cause")
            if cause is None:
                raise AttributeError(name)
            return getattr(cause, name)

        cls = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {"__getattr__": __getattr__, "__str__": RayTaskError.__str__,
             "__module__": __name__},
        )
        cls.__qualname__ = cls.__name__
        _dual_classes[cause_cls] = cls
    return cls


class ActorClassInheritanceException(TypeError):
    """A class tried to inherit from an actor class (decorate a plain subclass instead)."""


class WorkerCrashedError(RayError):
    """The worker running the task died unexpectedly."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "The worker died unexpectedly while executing this task."


class RayActorError(RayError):
    """The actor died before or while running the call."""

    def __init__(self, cause: Any = None, actor_id: Optional[str] = None, error_msg: Optional[str] = None):
        self.actor_id = actor_id
        self.error_msg = error_msg or (str(cause) if cause is not None else "The actor died unexpectedly.")
        self.cause = cause
        super().__init__(self.error_msg)

    def __reduce__(self):
        return (type(self), (None, self.actor_id, self.error_msg))

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    """The actor is dead: killed, exited, or its ``__init__`` raised."""

    def __init__(self, cause: Any = None, actor_id: Optional[str] = None, error_msg: Optional[str] = None,
                 actor_init_failed: bool = False):
        super().__init__(cause, actor_id, error_msg)
        self.actor_init_failed = actor_init_failed

    def __reduce__(self):
        return (ActorDiedError, (None, self.actor_id, self.error_msg, self.actor_init_failed))


class ActorUnavailableError(RayActorError):
    """The actor is temporarily unreachable."""


class ActorUnschedulableError(RayError):
    """The actor can never be placed (e.g. its hard node affinity names a dead node)."""


class TaskUnschedulableError(RayError):
    """The task can never be placed."""


class LocalRayletDiedError(RayError):
    """The local scheduler process died (kept for Ray compatibility)."""


class NodeDiedError(RayError):
    """The host running the task or object died."""


class TaskCancelledError(RayError):
    """The task was cancelled with ``cancel()``."""

    def __init__(self, task_id: Any = None, error_message: Optional[str] = None, *more: Any):
        if isinstance(self, RayTaskError):  # RayTaskError(TaskCancelledError): its cause has these
            super().__init__(task_id, error_message, *more)
            return
        self.task_id = task_id
        self.error_message = error_message
        super().__init__(task_id, error_message)

    def __str__(self) -> str:
        if self.error_message:
            return self.error_message
        return f"Task {self.task_id} was cancelled." if self.task_id else "This task or its dependency was cancelled."


class ObjectStoreFullError(RayError):
    """The object store is out of memory."""


class OutOfDiskError(RayError):
    """The local disk is full."""


class OutOfMemoryError(RayError):
    """A worker ran out of memory."""


class ObjectLostError(RayError):
    """The object's value is gone: freed, or its rank died."""

    def __init__(self, object_ref_hex: str = "", owner_address: Any = None, call_site: str = "",
                 message: Optional[str] = None):
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self.message = message
        super().__init__(object_ref_hex, owner_address, call_site, message)

    def __str__(self) -> str:
        return self.message or f"Failed to retrieve object {self.object_ref_hex}: its value was lost."


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching the object from its rank timed out."""


class ReferenceCountingAssertionError(ObjectLostError):
    """The object was freed although a reference to it existed."""


class OwnerDiedError(ObjectLostError):
    """The process that owns the object died."""


class ObjectReconstructionFailedError(ObjectLostError):
    """The object could not be rebuilt from its lineage."""


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    """Rebuilding the object ran out of attempts."""


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    """The object's lineage was evicted."""


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or a similar call timed out."""


class PlasmaObjectNotAvailable(RayError):
    """Kept for Ray compatibility."""


class AsyncioActorExit(RayError):
    """Raised inside an async actor to make it exit."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment of a task or actor could not be set up."""

    def __init__(self, error_message: Optional[str] = None):
        self.error_message = error_message
        super().__init__(error_message)

    def __str__(self) -> str:
        return f"Failed to set up runtime environment.\n{self.error_message or ''}"


class TaskPlacementGroupRemoved(RayError):
    """The placement group of the task was removed."""


class ActorPlacementGroupRemoved(RayError):
    """The placement group of the actor was removed."""


class PendingCallsLimitExceeded(RayError):
    """More calls are pending on the actor than its ``max_pending_calls``."""


class ObjectRefStreamEndOfStreamError(RayError):
    """The streaming generator has no more items."""


__all__ = [name for name, obj in list(globals().items())
           if isinstance(obj, type) and issubclass(obj, BaseException) and not name.startswith("_")]
