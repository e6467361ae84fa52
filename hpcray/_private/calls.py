"""Packing calls: the one place that turns a public call (a task, an actor's creation, an actor
method call) into the TaskSpec the scheduler reads, and submits it.

The public layer (``remote_function.py``, ``actor.py``) checks the call against the callee's
signature, keeps the plans below per function, class and method, and asks for
``submit_task``, ``create_actor`` or ``call_actor``; it never builds a TaskSpec itself.

    options ──► TaskPlan / MethodPlan (once per set of options)
    args    ──► pack_arguments: top-level ObjectRefs become ArgRef placeholders + dependencies
    both    ──► TaskSpec ──► CoreClient.submit ──► ObjectRefs
"""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Optional, Tuple

from . import context
from . import options as opt
from . import protocol as P
from .executor import IN_LAST_DEPENDENCY, NO_ARGUMENTS, ArgRef
from .generators import ObjectRefGenerator
from .interrupts import shielded
from .object_ref import ObjectRef, object_id_of, return_ids_of
from .placement import InGroup, Placement, check_fits_group, strategy_of
from .placement_groups import bundle_demand
from .serialization import SerializedValue, dumps_function, try_serialize

DEFAULT_TASK_RETRIES = 3  # Ray's default max_retries of a task


# ---- arguments ------------------------------------------------------------------------------
def pack_arguments(session: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], owner: str,
                   method: Optional[str] = None) -> Tuple[SerializedValue, List[bytes], Optional[ObjectRef]]:
    """A call's arguments as they travel, top-level ObjectRefs replaced by placeholders, and the
    ids of those refs. A call without arguments shares one pickled value (nothing to pickle).
    ``owner`` and ``method`` (the function, or the class and method) name the callee in errors.

    Arguments that pickle to more than ``inline_max`` (100 KiB, Ray's rule for putting arguments
    in its object store) become an object of the caller's, like ``put``: written once, into the
    host's arena where it fits, read in place by a rank of this host, fetched by others, never
    copied through the control path; the call then carries ``IN_LAST_DEPENDENCY`` and the object
    is its last dependency, held by the scheduler until the call is done. The third value is
    that object's ref: keep it until the call is submitted (None for small arguments)."""
    if not args and not kwargs:
        return NO_ARGUMENTS, (), None
    call_args, call_kwargs, deps = split_ref_arguments(args, kwargs)
    callee = owner if method is None else f"{owner}.{method}"
    inline_max = session.arguments_inline_max
    serialized = try_serialize((call_args, call_kwargs), f"an argument of {callee}():",
                               shared=inline_max is not None)
    # (most calls: no out-of-band buffers, so the pickle's length is the size: nbytes would sum
    # the buffers' views on every call)
    if serialized.placement is None and (inline_max is None or (
            not serialized.buffers and len(serialized.data) <= inline_max)
            or serialized.nbytes <= inline_max):
        return serialized, tuple(deps), None  # (tuples: see return_ids_of)
    held = session.client.put_serialized(serialized)
    deps.append(held.binary())
    return IN_LAST_DEPENDENCY, tuple(deps), held


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


class Export:
    """A function or class pickled once per process, content-addressed by its hash; each rank
    receives it with the first call that needs it (``CoreClient.submit``)."""

    __slots__ = ("target", "blob", "fn_id")

    def __init__(self, target: Any):
        self.target = target
        self.blob: Optional[bytes] = None
        self.fn_id: Optional[bytes] = None

    def get(self) -> Tuple[bytes, bytes]:
        if self.blob is None:
            try:
                blob = dumps_function(self.target)
            except Exception as exc:
                raise TypeError(f"Could not serialize the function {self.target!r}: "
                                f"{type(exc).__name__}: {exc}") from exc
            self.fn_id = hashlib.sha1(blob).digest()[:16]
            self.blob = blob
        return self.fn_id, self.blob


# ---- where a call runs -----------------------------------------------------------------------
def group_demand(demand: Dict[str, float], strategy: InGroup, wildcard: bool = True) -> Dict[str, float]:
    """A demand renamed to the bundle resources of a placement group (see placement_groups.py)."""
    return bundle_demand(demand, strategy.group_id.hex(), strategy.bundle_index, wildcard)


def inherited_strategy(strategy: Optional[Placement]) -> Optional[Placement]:
    """A call without a strategy, made by a task in a placement group that captures its child
    tasks, goes into the same group (any bundle)."""
    if strategy is not None:
        return strategy
    ctx = context.current()
    group = ctx.group if ctx is not None else None
    if group is not None and group.capture:
        return InGroup(group.group_id, -1, True)
    return None


# ---- tasks ------------------------------------------------------------------------------------
def returns_of(num_returns: Any, is_generator: Optional[bool], callee: str) -> int:
    """A call's ``num_returns`` option as TaskSpec.num_returns: a count, or P.STREAMING / P.DYNAMIC.
    A generator function streams unless told otherwise; ``is_generator`` None: not known."""
    if num_returns is None:
        return P.STREAMING if is_generator else 1
    if num_returns not in ("streaming", "dynamic"):
        return num_returns
    if num_returns == "dynamic":
        opt.warn_once("dynamic", "hpcray: num_returns='dynamic' is deprecated (as in Ray): use "
                      "num_returns='streaming', which hands out each item as soon as it exists")
    if is_generator is False:
        raise ValueError(f"{callee}: num_returns={num_returns!r} needs a generator function (one that "
                         "uses yield); this one is not")
    return P.STREAMING if num_returns == "streaming" else P.DYNAMIC


def stream_limit(options: Dict[str, Any]) -> int:
    """``_generator_backpressure_num_objects`` (-1 or None: no backpressure) as a TaskSpec's."""
    limit = options.get("_generator_backpressure_num_objects")
    return limit if limit is not None and limit > 0 else 0


def generator_refs(session: Any, task_id: bytes, count: int, limit: int, refs: List[ObjectRef]) -> Any:
    """What ``.remote()`` returns: one ref, a list, None, or a stream's ObjectRefGenerator."""
    if count == P.STREAMING:
        return ObjectRefGenerator(session.client, task_id, refs[0], limit)
    if count == 1 or count == P.DYNAMIC:
        return refs[0]
    return None if count == 0 else refs


class TaskPlan:
    """What a set of task options means for each call, worked out once."""

    __slots__ = ("options", "num_returns", "demand", "max_retries", "retry_blob", "env_vars",
                 "strategy", "name", "plain_demand", "stream_limit", "unfit")

    def __init__(self, options: Dict[str, Any], default_name: str, is_generator: bool = False):
        self.options = options
        self.name = options.get("name") or default_name
        self.num_returns = returns_of(options.get("num_returns"), is_generator, self.name)
        self.stream_limit = stream_limit(options)
        self.plain_demand = opt.resource_demand(options, default_cpus=1.0)
        max_retries = options.get("max_retries")
        self.max_retries = DEFAULT_TASK_RETRIES if max_retries is None else max_retries
        self.retry_blob = opt.RetryPolicy(options.get("retry_exceptions", False)).blob
        env = (options.get("runtime_env") or {}).get("env_vars")
        self.env_vars = dict(env) if env else None
        self.strategy = strategy_of(options)
        self.demand = self.plain_demand
        self.unfit: Optional[ValueError] = None  # raised by each .remote(), as Ray does
        if type(self.strategy) is InGroup:
            try:
                check_fits_group(options, self.plain_demand, self.name)
            except ValueError as exc:
                self.unfit = exc
            self.demand = group_demand(self.plain_demand, self.strategy)
        if options.get("max_calls"):
            opt.warn_once("max_calls", "hpcray: max_calls is accepted but a rank's process is never "
                          "replaced: tasks keep running in the same long-lived rank process")


@shielded
def submit_task(session: Any, export: Export, plan: TaskPlan, args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> Any:
    """Submit a task; its ObjectRef, a list of them (num_returns > 1) or None (num_returns=0)."""
    if plan.unfit is not None:
        raise plan.unfit
    serialized, deps, held = pack_arguments(session, args, kwargs, plan.name)
    fn_id, blob = export.get()
    client = session.client
    task_id = client.new_task_id()
    count = plan.num_returns
    env = plan.env_vars
    if session.job_env:
        env = dict(session.job_env, **(env or {}))
    strategy, demand = plan.strategy, plan.demand
    if strategy is None:
        strategy = inherited_strategy(None)
        if strategy is not None:
            demand = group_demand(plan.plain_demand, strategy)
    spec = P.TaskSpec(task_id, fn_id, None, plan.name, serialized, deps, return_ids_of(task_id, 1 if count < 0 else count),
                      count, demand, plan.max_retries, plan.retry_blob, env, strategy, client.rank)
    spec.parent = context.current_task_id()
    spec.stream_limit = plan.stream_limit
    if count == P.STREAMING:
        client.open_stream(task_id)
    refs = client.submit(spec, blob)
    del held  # (the scheduler holds the arguments' object from the SUBMIT on)
    return generator_refs(session, task_id, count, plan.stream_limit, refs)


# ---- actors -----------------------------------------------------------------------------------
class ActorPlan:
    """An actor's creation options, checked and worked out (``create_actor``)."""

    __slots__ = ("placement", "lifetime", "strategy", "groups", "name", "namespace", "detached",
                 "max_concurrency", "get_if_exists", "max_restarts")

    def __init__(self, options: Dict[str, Any], namespace: str, class_name: str = "actor"):
        explicit_cpus = options.get("num_cpus") is not None
        placement = opt.resource_demand(options, default_cpus=1.0)
        # a living actor holds CPUs only when asked for them (Ray: 1 CPU to be placed, 0 held)
        lifetime = dict(placement) if explicit_cpus else {k: v for k, v in placement.items() if k != "CPU"}
        strategy = inherited_strategy(strategy_of(options))
        if type(strategy) is InGroup:  # placed in, and holding, bundle resources
            check_fits_group(options, placement, class_name)
            placement = group_demand(placement, strategy)
            lifetime = group_demand(lifetime, strategy, wildcard=False)
        groups = options.get("concurrency_groups") or {}
        if isinstance(groups, list):
            groups = {name: 1 for name in groups}
        for group, limit in groups.items():
            if not isinstance(limit, int) or limit < 1:
                raise ValueError(f"concurrency_groups[{group!r}]={limit!r}: a group's limit must be an int >= 1")
        self.placement = placement
        self.lifetime = lifetime
        self.strategy = strategy
        self.groups = dict(groups)
        self.name: Optional[str] = options.get("name")
        self.namespace: str = options.get("namespace") or namespace or ""
        self.detached = options.get("lifetime") == "detached"
        self.max_concurrency = options.get("max_concurrency")
        self.get_if_exists = bool(options.get("get_if_exists", False))
        self.max_restarts: int = options.get("max_restarts") or 0


@shielded
def create_actor(session: Any, export: Export, class_name: str, meta_blob: bytes, is_async: bool,
                 plan: ActorPlan, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[bytes, ObjectRef]:
    """Create an actor: (actor id, ref of its handle object). With ``get_if_exists`` and a live
    actor of that name, that actor's (the scheduler counted its handle for us)."""
    serialized, deps, held = pack_arguments(session, args, kwargs, class_name, "__init__")
    fn_id, blob = export.get()
    client = session.client
    task_id = client.new_task_id()
    reply = client.new_reply_id() if plan.name is not None else None
    spec = P.TaskSpec(task_id, fn_id, None, f"{class_name}.__init__", serialized, deps,
                      [object_id_of(task_id, 0)], 1, plan.placement, plan.max_restarts, False, None,
                      plan.strategy, client.rank)
    spec.kind = P.ACTOR_CREATE  # (its max_retries is the actor's max_restarts)
    spec.actor_id = task_id
    spec.actor_options = P.ActorOptions(class_name, meta_blob, plan.name, plan.namespace, plan.detached,
                                        plan.lifetime, plan.max_concurrency, plan.groups, is_async,
                                        plan.get_if_exists, reply)
    ref = client.submit(spec, blob)[0]
    del held  # (the scheduler holds the arguments' object from the SUBMIT on)
    if reply is None:
        return task_id, ref
    answer = client.await_reply(reply)
    if answer[0] == "exists":
        del ref  # our creation was not needed: drop its handle object
        client.adopt(answer[2])
        return answer[1], ObjectRef(answer[2])
    return task_id, ref


class MethodPlan:
    """What an actor method call's options mean: the call's own, else the method's decorator,
    else the actor's."""

    __slots__ = ("num_returns", "max_retries", "retry_blob", "group", "name", "stream_limit")

    def __init__(self, display_name: str, call_options: Dict[str, Any], decorated: Dict[str, Any],
                 actor_retries: int, actor_retry_exceptions: Any, is_generator: Optional[bool]):
        def pick(key: str, default: Any) -> Any:
            for source in (call_options, decorated):
                if source.get(key) is not None:
                    return source[key]
            return default

        self.num_returns = returns_of(pick("num_returns", None), is_generator, display_name)
        self.stream_limit = stream_limit({"_generator_backpressure_num_objects":
                                          pick("_generator_backpressure_num_objects", None)})
        self.max_retries = pick("max_task_retries", actor_retries)
        self.retry_blob = opt.RetryPolicy(pick("retry_exceptions", actor_retry_exceptions)).blob
        self.group: Optional[str] = pick("concurrency_group", None)
        self.name = display_name


@shielded
def call_actor(session: Any, actor_id: bytes, method: str, plan: MethodPlan, owner: str,
               args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, List[bytes]]:
    """Submit an actor method call: (its ObjectRef, a list of them or None; the return ids)."""
    serialized, deps, held = pack_arguments(session, args, kwargs, owner, method)
    client = session.client
    task_id = client.new_task_id()
    count = plan.num_returns
    return_ids = return_ids_of(task_id, 1 if count < 0 else count)
    spec = P.TaskSpec(task_id, b"", None, plan.name, serialized, deps, return_ids, count, {},
                      plan.max_retries, plan.retry_blob, None, None, client.rank)
    spec.kind = P.ACTOR_METHOD
    spec.parent = context.current_task_id()
    spec.actor_id = actor_id
    spec.method = method
    spec.group = plan.group
    spec.stream_limit = plan.stream_limit
    if count == P.STREAMING:
        client.open_stream(task_id)
    refs = client.submit(spec, None)
    del held  # (the scheduler holds the arguments' object from the SUBMIT on)
    return generator_refs(session, task_id, count, plan.stream_limit, refs), return_ids
