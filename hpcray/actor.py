"""Actors (Ray's ``ray.actor``): ``@remote`` classes, handles, ``@method``, ``exit_actor``.

An actor lives on one rank as an instance plus a mailbox. Its handle is backed by an ObjectRef
to the actor's *handle object*, so handles are counted wherever they go (driver, tasks, other
actors, stored values) exactly like ObjectRefs: when the last one is gone the actor finishes the
calls already submitted and ends.
"""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any, Dict, Optional

from . import exceptions
from ._private import api, calls, context
from ._private.ids import BinaryID
from ._private.interrupts import shielded
from ._private import options as opt
from ._private.object_ref import ObjectRef
from ._private.serialization import dumps_function, loads

_SPECIAL_METHODS = ("__ray_terminate__", "__ray_ready__")


def method(*args: Any, **kwargs: Any) -> Any:
    """``@method(num_returns=..., max_task_retries=..., retry_exceptions=..., concurrency_group=...)``
    on an actor method."""
    if args:
        raise TypeError("@hpcray.method takes keyword arguments only, e.g. @method(num_returns=2)")
    checked = opt.validate(kwargs, opt.METHOD_OPTIONS, "actor methods")

    def decorator(function: Any) -> Any:
        function.__hpcray_method_options__ = checked
        return function
    return decorator


def exit_actor() -> None:
    """End the current actor after this call; queued calls fail with RayActorError."""
    from ._private.actor_host import ActorExit
    ctx = context.current()
    if ctx is None or ctx.actor_id is None:
        raise TypeError("exit_actor() can only be called inside an actor method")
    raise ActorExit()


class _MethodMeta:
    __slots__ = ("options", "signature", "is_async", "is_generator", "arity")

    def __init__(self, options: Dict[str, Any], signature: Optional[inspect.Signature], is_async: bool,
                 is_generator: bool):
        self.arity = opt.positional_arity(signature)
        self.options = options
        self.signature = signature
        self.is_async = is_async
        self.is_generator = is_generator


class _ActorMeta:
    """What a handle needs to know of its class: method names, signatures, options."""

    def __init__(self, cls: type, options: Dict[str, Any]):
        self.class_name = cls.__name__
        self.methods: Dict[str, _MethodMeta] = {}
        self.plans: Dict[str, calls.MethodPlan] = {}  # per method, for calls without options
        for name, member in inspect.getmembers(cls, predicate=callable):
            if name.startswith("__") and name != "__call__":
                continue
            function = inspect.unwrap(member) if inspect.isfunction(member) else member
            try:
                signature = inspect.signature(member)
                params = list(signature.parameters.values())
                if inspect.isfunction(member) and params and not isinstance(
                        inspect.getattr_static(cls, name), (staticmethod, classmethod)):
                    signature = signature.replace(parameters=params[1:])
            except (TypeError, ValueError):
                signature = None
            is_async = inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
            is_generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
            self.methods[name] = _MethodMeta(getattr(member, "__hpcray_method_options__", {}), signature,
                                             is_async, is_generator)
        self.is_async = any(m.is_async for m in self.methods.values())
        self.max_task_retries = options.get("max_task_retries", 0)
        self.retry_exceptions = options.get("retry_exceptions", False)
        self.max_pending_calls = options.get("max_pending_calls", -1)

    def blob(self) -> bytes:
        try:
            return dumps_function(self)
        except Exception:  # signatures with unpicklable defaults: drop them, keep the rest
            for meta in self.methods.values():
                meta.signature = None
            return dumps_function(self)


class ActorClass:
    """A class decorated with ``@hpcray.remote``; ``.remote(...)`` creates an actor."""

    def __init__(self, cls: type, options: Dict[str, Any]):
        class_options = dict(options)
        retry = class_options.pop("retry_exceptions", None)
        checked = opt.validate_actor_options(class_options, in_options_call=False)
        if retry is not None:
            opt.validate({"retry_exceptions": retry}, opt.TASK_OPTIONS, "actors")
            checked["retry_exceptions"] = retry
        self._cls = cls
        self._default_options = checked
        self._meta = _ActorMeta(cls, checked)
        self._export = calls.Export(cls)
        try:
            self._init_signature: Optional[inspect.Signature] = inspect.signature(cls)
        except (TypeError, ValueError):
            self._init_signature = None
        self.__name__ = cls.__name__
        self.__qualname__ = getattr(cls, "__qualname__", cls.__name__)
        self.__doc__ = cls.__doc__
        self.__module__ = cls.__module__

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
                        f"use '{self.__name__}.remote()'.")

    def __mro_entries__(self, bases):
        # (the subclass's name is known only once its class is made: a base that refuses it)
        actor_class = self.__name__

        class _NotAnActorBase:
            def __init_subclass__(cls, **kwargs):
                raise exceptions.ActorClassInheritanceException(
                    f"Attempted to define subclass '{cls.__name__}' of actor class '{actor_class}'. "
                    "Inheriting from actor classes is not currently supported. You can instead "
                    "inherit from a non-actor base class and make the derived class an actor class "
                    "(with @ray.remote).")
        return (_NotAnActorBase,)

    def __getattr__(self, name: str) -> Any:
        """The class's own attributes and static or class methods (``Model.SCALE``), as on Ray;
        a plain method is called through a handle."""
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        try:
            raw = inspect.getattr_static(cls, name)
        except AttributeError:
            raise AttributeError(f"'ActorClass({self.__name__})' has no attribute {name!r}") from None
        if inspect.isfunction(raw):
            raise AttributeError(f"'{self.__name__}.{name}' is an actor method: call it on a handle, "
                                 f"'{self.__name__}.remote().{name}.remote()'")
        return getattr(cls, name)

    def _remote(self, args=None, kwargs=None, **options) -> "ActorHandle":
        """Ray's older form: ``Cls._remote(args=[...], kwargs={...}, **options)``."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def __reduce__(self):
        return (ActorClass, (self._cls, self._default_options))

    def remote(self, *args, **kwargs) -> "ActorHandle":
        """Create the actor; returns its handle at once."""
        return self._create(args, kwargs, self._default_options)

    def options(self, **options) -> "_ActorClassWithOptions":
        retry = options.pop("retry_exceptions", None)
        checked = opt.validate_actor_options(options, in_options_call=True)
        if retry is not None:
            opt.validate({"retry_exceptions": retry}, opt.TASK_OPTIONS, "actors")
            checked["retry_exceptions"] = retry
        merged = dict(self._default_options)
        merged.update(checked)
        return _ActorClassWithOptions(self, merged)

    def bind(self, *args, **kwargs):
        """A node of a graph (``hpcray.dag``): this actor, made by ``execute()``."""
        from .dag import ClassNode
        return ClassNode(self, args, kwargs)

    def _create(self, args, kwargs, options: Dict[str, Any]) -> "ActorHandle":
        session = api.ensure_session()
        if self._init_signature is not None:
            try:
                self._init_signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self.__name__}.remote(): {exc}") from None
        meta = self._meta
        if options.keys() & {"max_task_retries", "retry_exceptions", "max_pending_calls"}:
            meta = _ActorMeta(self._cls, options)
        plan = calls.ActorPlan(options, session.namespace, self.__name__)
        actor_id, ref = calls.create_actor(session, self._export, self.__name__, meta.blob(), meta.is_async,
                                           plan, args, kwargs)
        return ActorHandle(actor_id, meta, ref)


class _ActorClassWithOptions:
    def __init__(self, parent: ActorClass, options: Dict[str, Any]):
        self._parent = parent
        self._options = options

    def remote(self, *args, **kwargs) -> "ActorHandle":
        return self._parent._create(args, kwargs, self._options)

    def bind(self, *args, **kwargs):
        from .dag import ClassNode
        return ClassNode(self, args, kwargs)

    def options(self, **options) -> "_ActorClassWithOptions":
        merged = dict(self._options)
        merged.update(self._parent.options(**options)._options)
        return _ActorClassWithOptions(self._parent, merged)


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(...)``. Picklable into tasks and actors."""

    def __init__(self, actor_id: bytes, meta: _ActorMeta, ref: ObjectRef):
        self._actor_id = actor_id
        self._meta = meta
        self._ref = ref
        self._pending: deque = deque()

    def __getattr__(self, name: str) -> "ActorMethod":
        if name.startswith("_") and name not in _SPECIAL_METHODS:
            meta = self.__dict__.get("_meta")
            if meta is None or name not in meta.methods:
                raise AttributeError(name)
        meta = self.__dict__["_meta"]
        method_meta = meta.methods.get(name)
        if method_meta is None and name not in _SPECIAL_METHODS:
            raise AttributeError(f"'{meta.class_name}' actor has no method '{name}'")
        return ActorMethod(self, name, method_meta, {})

    def __reduce__(self):
        return (_rebuild_handle, (self._actor_id, self._meta.blob(), self._ref))

    def __repr__(self) -> str:
        return f"Actor({self._meta.class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    @property
    def _ray_actor_id(self) -> "ActorID":
        return ActorID(self._actor_id)

    def _plan(self, name: str, method_meta: Optional[_MethodMeta], call_options: Dict[str, Any]) -> calls.MethodPlan:
        """What a call's options mean; cached per method when the call has none of its own."""
        meta = self._meta
        plan = meta.plans.get(name) if not call_options else None
        if plan is None:
            plan = calls.MethodPlan(f"{meta.class_name}.{name}", call_options,
                                    method_meta.options if method_meta is not None else {},
                                    meta.max_task_retries, meta.retry_exceptions,
                                    method_meta.is_generator if method_meta is not None else None)
            if not call_options:
                meta.plans[name] = plan
        return plan

    def _call(self, name: str, method_meta: Optional[_MethodMeta], args, kwargs, call_options):
        session = api.ensure_session()
        meta = self._meta
        if method_meta is not None and method_meta.signature is not None and \
                (kwargs or len(args) != method_meta.arity):
            try:
                method_meta.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{meta.class_name}.{name}.remote(): {exc}") from None
        plan = self._plan(name, method_meta, call_options)
        client = session.client
        if meta.max_pending_calls > 0:
            self._pending = deque(client.not_arrived(self._pending))
            if len(self._pending) >= meta.max_pending_calls:
                raise exceptions.PendingCallsLimitExceeded(
                    f"Too many pending calls ({len(self._pending)}) on actor {meta.class_name}: "
                    f"max_pending_calls={meta.max_pending_calls}")
        refs, return_ids = calls.call_actor(session, self._actor_id, name, plan, meta.class_name, args, kwargs)
        if meta.max_pending_calls > 0 and return_ids:
            self._pending.extend(return_ids)
            client.want(return_ids)
        return refs


def _rebuild_handle(actor_id: bytes, meta_blob: bytes, ref: ObjectRef) -> ActorHandle:
    return ActorHandle(actor_id, loads(meta_blob), ref)


class ActorMethod:
    """``handle.method``: call ``.remote(...)``; ``.options(num_returns=...)`` first if needed."""

    def __init__(self, handle: ActorHandle, name: str, meta: Optional[_MethodMeta], options: Dict[str, Any]):
        self._handle = handle
        self._name = name
        self._meta = meta
        self._options = options

    def remote(self, *args, **kwargs):
        return self._handle._call(self._name, self._meta, args, kwargs, self._options)

    def options(self, **options) -> "ActorMethod":
        checked = opt.validate(options, opt.METHOD_OPTIONS, "actor methods")
        merged = dict(self._options)
        merged.update(checked)
        return ActorMethod(self._handle, self._name, self._meta, merged)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Actor methods cannot be called directly. Instead of running "
                        f"'object.{self._name}()', try 'object.{self._name}.remote()'.")

    def bind(self, *args, **kwargs):
        """A node of a graph (``hpcray.dag``): this call on this actor."""
        from .dag import ClassMethodNode
        return ClassMethodNode(self._handle, self._name, self._options, args, kwargs)


class ActorID(BinaryID):
    """Ray's ActorID: ``hex()`` and ``binary()``."""

    __slots__ = ()


@shielded
def get_actor(name: str, namespace: Optional[str] = None) -> ActorHandle:
    """The handle of a named actor (ValueError when there is none)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor(): name must be a non-empty string, got {name!r}")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"get_actor(): namespace must be a str, got {type(namespace).__name__}")
    session = api.ensure_session()
    client = session.client
    actor_id, handle_id, meta_blob = client.lookup_actor(name, namespace or session.namespace)
    return ActorHandle(actor_id, loads(meta_blob), ObjectRef(handle_id))


@shielded
def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor at once: its running and queued calls fail with RayActorError."""
    if not isinstance(actor, ActorHandle):
        raise ValueError(f"hpcray.kill() only supports actors; got {type(actor).__name__}")
    if not isinstance(no_restart, bool):
        raise TypeError("kill(): no_restart must be a bool")
    session = api.ensure_session()
    session.client.kill_actor(actor._actor_id, no_restart)
