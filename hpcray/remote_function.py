"""Remote functions: ``@hpcray.remote`` on a function, ``.options()`` and ``.remote()``.

Mirrors Ray's ``ray.remote_function``. A function is pickled (cloudpickle, by value where
needed) on its first ``.remote()`` in a session and shipped to each rank once, not per call.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any, Dict, List, Optional, Tuple, Union

from ._private import api
from ._private import options as opt
from ._private.context import current as current_task_context, current_task_id
from ._private.executor import NO_ARGUMENTS, ArgRef
from ._private.object_ref import ObjectRef, return_ids_of
from ._private.placement import InGroup, OnHost, Spread
from ._private.protocol import TaskSpec
from ._private.serialization import SerializedValue, dumps_function, try_serialize


Placement = Union[Spread, OnHost, InGroup]


class _Plan:
    """What a set of options means for each call, worked out once."""

    __slots__ = ("options", "num_returns", "demand", "max_retries", "retry_blob", "env_vars",
                 "strategy", "name", "plain_demand")

    def __init__(self, options: Dict[str, Any], default_name: str):
        self.options = options
        self.num_returns = options.get("num_returns", 1)
        if self.num_returns is None:
            self.num_returns = 1
        if isinstance(self.num_returns, str):
            raise NotImplementedError(
                f"num_returns={self.num_returns!r} (generator tasks) is not supported by hpcray yet")
        self.demand = opt.resource_demand(options, default_cpus=1.0)
        max_retries = options.get("max_retries")
        self.max_retries = 3 if max_retries is None else max_retries
        self.retry_blob = opt.RetryPolicy(options.get("retry_exceptions", False)).blob
        env = (options.get("runtime_env") or {}).get("env_vars")
        self.env_vars = dict(env) if env else None
        self.strategy = strategy_key(options)
        self.plain_demand = self.demand
        if type(self.strategy) is InGroup:
            self.demand = group_demand(self.demand, self.strategy)
        self.name = options.get("name") or default_name
        if options.get("max_calls"):
            opt.warn_once("max_calls", "hpcray: max_calls is accepted but a rank's process is never "
                          "replaced: tasks keep running in the same long-lived rank process")


def strategy_key(options: Dict[str, Any]) -> Optional[Placement]:
    """The scheduler's form of a scheduling strategy; unsupported ones raise here."""
    from .util.placement_group import PlacementGroup
    from .util.scheduling_strategies import (NodeAffinitySchedulingStrategy,
                                             NodeLabelSchedulingStrategy,
                                             PlacementGroupSchedulingStrategy)
    if options.get("label_selector") or options.get("fallback_strategy"):
        raise NotImplementedError("label_selector/fallback_strategy: hpcray hosts carry no labels yet")
    strategy = options.get("scheduling_strategy")
    legacy = options.get("placement_group", "default")
    if legacy not in ("default", None):
        strategy = PlacementGroupSchedulingStrategy(legacy, options.get("placement_group_bundle_index", -1),
                                                    options.get("placement_group_capture_child_tasks"))
    if strategy is None or strategy == "DEFAULT":
        return None
    if strategy == "SPREAD":
        return Spread()
    if isinstance(strategy, NodeAffinitySchedulingStrategy):
        return OnHost(strategy.node_id, bool(strategy.soft))
    if isinstance(strategy, PlacementGroupSchedulingStrategy):
        group = strategy.placement_group
        if group is None:
            return None
        if not isinstance(group, PlacementGroup):
            raise TypeError(f"placement_group={group!r}: must be a PlacementGroup from "
                            "hpcray.util.placement_group()")
        index = strategy.placement_group_bundle_index
        if not isinstance(index, int) or not -1 <= index < group.bundle_count:
            raise ValueError(f"placement_group_bundle_index={index!r}: must be -1 or between 0 and "
                             f"{group.bundle_count - 1} (the group has {group.bundle_count} bundles)")
        return InGroup(group.id.binary(), index, bool(strategy.placement_group_capture_child_tasks))
    if isinstance(strategy, NodeLabelSchedulingStrategy):
        raise NotImplementedError("NodeLabelSchedulingStrategy: hpcray hosts carry no labels yet")
    raise ValueError(f"scheduling_strategy={strategy!r} is not supported")


def group_demand(demand: Dict[str, float], strategy: InGroup, wildcard: bool = True) -> Dict[str, float]:
    """A demand renamed to the bundle resources of a placement group (see placement_groups.py)."""
    from ._private.placement_groups import bundle_demand
    return bundle_demand(demand, strategy.group_id.hex(), strategy.bundle_index, wildcard)


def inherited_strategy(strategy: Optional[Placement]) -> Optional[Placement]:
    """A task without a strategy, submitted by a task in a placement group that captures its
    child tasks, goes into the same group (any bundle)."""
    if strategy is not None:
        return strategy
    ctx = current_task_context()
    group = ctx.group if ctx is not None else None
    if group is not None and group.capture:
        return InGroup(group.group_id, -1, True)
    return None


def pack_arguments(args: Tuple[Any, ...], kwargs: Dict[str, Any], owner: str,
                   method: Optional[str] = None) -> Tuple[SerializedValue, List[bytes]]:
    """A call's arguments as they travel, top-level ObjectRefs replaced by placeholders, and the
    ids of those refs. A call without arguments shares one pickled value (nothing to pickle).
    ``owner`` and ``method`` (the function, or the class and method) name the callee in errors."""
    if not args and not kwargs:
        return NO_ARGUMENTS, []
    call_args, call_kwargs, deps = split_ref_arguments(args, kwargs)
    callee = owner if method is None else f"{owner}.{method}"
    return try_serialize((call_args, call_kwargs), f"an argument of {callee}():"), deps


def split_ref_arguments(args: Tuple[Any, ...], kwargs: Dict[str, Any]):
    """Replace top-level ObjectRefs with placeholders; return (args, kwargs, dependency ids)."""
    deps = []
    out_args = []
    for value in args:
        if type(value) is ObjectRef:
            out_args.append(ArgRef(len(deps)))
            deps.append(value.binary())
        else:
            out_args.append(value)
    out_kwargs = {}
    for key, value in kwargs.items():
        if type(value) is ObjectRef:
            out_kwargs[key] = ArgRef(len(deps))
            deps.append(value.binary())
        else:
            out_kwargs[key] = value
    return out_args, out_kwargs, deps


class _Export:
    """The pickled function, made once per process (and content-addressed by its hash)."""

    __slots__ = ("function", "blob", "fn_id")

    def __init__(self, function: Any):
        self.function = function
        self.blob: Optional[bytes] = None
        self.fn_id: Optional[bytes] = None

    def get(self) -> Tuple[bytes, bytes]:
        if self.blob is None:
            try:
                blob = dumps_function(self.function)
            except Exception as exc:
                raise TypeError(f"Could not serialize the function {self.function!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
            self.fn_id = hashlib.sha1(blob).digest()[:16]
            self.blob = blob
        return self.fn_id, self.blob


class RemoteFunction:
    """A function decorated with ``@hpcray.remote``. Call ``.remote()`` to run it as a task."""

    def __init__(self, function: Any, options: Dict[str, Any]):
        if inspect.iscoroutinefunction(function):
            raise ValueError("'async def' should not be used for remote tasks. You can wrap the async "
                             "function with `asyncio.run(f())`, or use an async actor.")
        self._function = function
        self._default_options = opt.validate_task_options(options, in_options_call=False)
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "function"))
        self._plan = _Plan(self._default_options, self._name)
        try:
            self._signature: Optional[inspect.Signature] = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        self._arity = opt.positional_arity(self._signature)
        self._is_generator = inspect.isgeneratorfunction(function)
        self._export = _Export(function)
        self.__name__ = getattr(function, "__name__", self._name)
        self.__qualname__ = self._name
        self.__doc__ = getattr(function, "__doc__", None)
        self.__module__ = getattr(function, "__module__", __name__)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Instead of running "
                        f"'{self._name}()', try '{self._name}.remote()'.")

    def __reduce__(self):
        return (_rebuild_remote_function, (self._function, self._default_options))

    def __repr__(self) -> str:
        return f"<hpcray remote function {self._name}>"

    def remote(self, *args, **kwargs):
        """Submit a task; returns an ObjectRef (or a list of them, or None for num_returns=0)."""
        return self._submit(args, kwargs, self._plan)

    def options(self, **options) -> "_FunctionWithOptions":
        """A copy of this function with some options changed; ``.remote()`` it."""
        checked = opt.validate_task_options(options, in_options_call=True)
        merged = dict(self._default_options)
        merged.update(checked)
        return _FunctionWithOptions(self, _Plan(merged, self._name))

    def bind(self, *args, **kwargs):
        raise NotImplementedError("Ray DAGs (.bind) are not supported by hpcray")

    def _submit(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], plan: _Plan):
        session = api.ensure_session()
        if self._signature is not None and (kwargs or len(args) != self._arity):
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self._name}.remote(): {exc}") from None
        if self._is_generator:
            raise NotImplementedError(f"{self._name} is a generator function: streaming generator "
                                      "tasks are not supported by hpcray yet")
        serialized, deps = pack_arguments(args, kwargs, self._name)
        fn_id, blob = self._export.get()
        client = session.client
        task_id = client.new_task_id()
        count = plan.num_returns
        return_ids = return_ids_of(task_id, count)
        env = plan.env_vars
        if session.job_env:
            env = dict(session.job_env, **(env or {}))
        strategy, demand = plan.strategy, plan.demand
        if strategy is None:
            strategy = inherited_strategy(None)
            if strategy is not None:
                demand = group_demand(plan.plain_demand, strategy)
        spec = TaskSpec(task_id, fn_id, None, plan.name, serialized, deps, return_ids, count,
                        demand, plan.max_retries, plan.retry_blob, env, strategy, client.rank)
        spec.parent = current_task_id()
        refs = client.submit(spec, blob)
        if count == 1:
            return refs[0]
        return None if count == 0 else refs


class _FunctionWithOptions:
    """What ``RemoteFunction.options()`` returns."""

    def __init__(self, parent: RemoteFunction, plan: _Plan):
        self._parent = parent
        self._plan = plan

    def remote(self, *args, **kwargs):
        return self._parent._submit(args, kwargs, self._plan)

    def options(self, **options) -> "_FunctionWithOptions":
        checked = opt.validate_task_options(options, in_options_call=True)
        merged = dict(self._plan.options)
        merged.update(checked)
        return _FunctionWithOptions(self._parent, _Plan(merged, self._parent._name))

    def bind(self, *args, **kwargs):
        raise NotImplementedError("Ray DAGs (.bind) are not supported by hpcray")


def _rebuild_remote_function(function: Any, options: Dict[str, Any]) -> RemoteFunction:
    return RemoteFunction(function, options)
