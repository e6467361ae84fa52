"""Validation of ``remote()`` and ``.options()`` keywords, with Ray's defaults and rules.

Each option has a type constraint (TypeError when violated) and a value constraint (ValueError),
both naming the option, raised at decoration or ``.options()`` time.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, Dict, Optional, Tuple

from . import serialization
from .placement import Strategy

_NUMBER = (int, float)


def _resource_quantity(name: str) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        if value is None:
            return None
        if value < 0:
            return f"The quantity of resource {name} cannot be negative, got {value}"
        if isinstance(value, float) and value != 0.0 and int(value * 10000) == 0:
            return f"The precision of the fractional quantity of resource {name} cannot go beyond 0.0001, got {value}"
        if name == "num_gpus" and isinstance(value, float) and value > 1 and not value.is_integer():
            return f"num_gpus={value}: a GPU amount above 1 must be a whole number"
        return None
    return check


def _check_resources(value: Any) -> Optional[str]:
    if value is None:
        return None
    for key, amount in value.items():
        if not isinstance(key, str):
            return f"resources: the key {key!r} must be a string"
        if key in ("CPU", "GPU"):
            return (f"resources: use the 'num_cpus' and 'num_gpus' keyword arguments instead of "
                    f"'{key}' in 'resources'")
        if key == "bundle" or key.startswith("bundle_group"):
            return f"resources: '{key}' is a reserved resource name"
        if not isinstance(amount, _NUMBER) or isinstance(amount, bool):
            return f"resources: the amount of {key!r} must be a number, got {type(amount).__name__}"
        problem = _resource_quantity(key)(amount)
        if problem:
            return f"resources: {problem}"
    return None


def _check_num_returns(value: Any) -> Optional[str]:
    if isinstance(value, str):
        return None if value in ("streaming", "dynamic") else (
            f"num_returns={value!r}: must be an int >= 0, 'streaming' or 'dynamic'")
    if value < 0:
        return f"num_returns={value}: the number of returns must be >= 0"
    return None


def _check_at_least(name: str, minimum: int) -> Callable[[Any], Optional[str]]:
    def check(value: Any) -> Optional[str]:
        if value is not None and value < minimum:
            return f"{name}={value}: must be >= {minimum}"
        return None
    return check


def _check_retry_exceptions(value: Any) -> Optional[str]:
    if isinstance(value, bool):
        return None
    if not all(inspect.isclass(e) and issubclass(e, BaseException) for e in value):
        return ("retry_exceptions must be a bool or a list or tuple of exception classes, "
                f"got {value!r}")
    return None


def _check_runtime_env(value: Any) -> Optional[str]:
    if value is None:
        return None
    for key, entry in value.items():
        if key == "env_vars":
            if not isinstance(entry, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in entry.items()
            ):
                return "runtime_env['env_vars'] must be a dict of str to str"
        elif key == "worker_process_setup_hook":
            from .setup_hook import check
            problem = check(entry)
            if problem:
                return problem
        elif key == "config" or key.startswith("_"):
            continue
        elif key in ("working_dir", "py_modules", "pip", "conda", "uv", "container", "image_uri",
                     "excludes", "nsight", "java_jars", "py_executable", "mpi"):
            if entry:
                raise NotImplementedError(
                    f"runtime_env[{key!r}] is not supported by hpcray: every rank already shares the "
                    "job's Python environment and file system; only 'env_vars' is implemented")
        else:
            return f"runtime_env has an unknown field {key!r}"
    return None


def _check_scheduling_strategy(value: Any) -> Optional[str]:
    if value is None or value in ("DEFAULT", "SPREAD"):
        return None
    if isinstance(value, Strategy):
        return None
    return (f"scheduling_strategy={value!r}: must be None, 'DEFAULT', 'SPREAD' or a strategy from "
            "hpcray.util.scheduling_strategies")


def _check_backpressure(value: Any) -> Optional[str]:
    if value is not None and value != -1 and value < 1:
        return f"_generator_backpressure_num_objects={value}: must be -1 (no backpressure) or >= 1"
    return None


def _check_lifetime(value: Any) -> Optional[str]:
    if value not in (None, "detached", "non_detached"):
        return f"lifetime={value!r}: must be None, 'detached' or 'non_detached'"
    return None


def _check_max_pending(value: Any) -> Optional[str]:
    if value == 0 or value < -1:
        return f"max_pending_calls={value}: must be -1 (unlimited) or > 0"
    return None


def _check_max_concurrency(value: Any) -> Optional[str]:
    if value is not None and value < 1:
        return f"max_concurrency={value}: must be >= 1"
    return None


class _Option:
    __slots__ = ("types", "check", "default")

    def __init__(self, types, check=None, default=None):
        self.types = types
        self.check = check
        self.default = default


_NONE = type(None)

COMMON_OPTIONS: Dict[str, _Option] = {
    "accelerator_type": _Option((str, _NONE)),
    "memory": _Option(_NUMBER + (_NONE,), _resource_quantity("memory")),
    "name": _Option((str, _NONE)),
    "num_cpus": _Option(_NUMBER + (_NONE,), _resource_quantity("num_cpus")),
    "num_gpus": _Option(_NUMBER + (_NONE,), _resource_quantity("num_gpus")),
    "object_store_memory": _Option(_NUMBER + (_NONE,), _resource_quantity("object_store_memory")),
    "placement_group": _Option((type(None), str, object), None, "default"),
    "placement_group_bundle_index": _Option((int,), _check_at_least("placement_group_bundle_index", -1), -1),
    "placement_group_capture_child_tasks": _Option((bool, _NONE)),
    "resources": _Option((dict, _NONE), _check_resources),
    "runtime_env": _Option((dict, _NONE), _check_runtime_env),
    "scheduling_strategy": _Option((object,), _check_scheduling_strategy),
    "label_selector": _Option((dict, _NONE)),
    "fallback_strategy": _Option((list, _NONE)),
    "_metadata": _Option((dict, _NONE)),
    "_labels": _Option((dict, _NONE)),
    "enable_task_events": _Option((bool,), None, True),
}

TASK_OPTIONS: Dict[str, _Option] = dict(COMMON_OPTIONS, **{
    "max_calls": _Option((int, _NONE), _check_at_least("max_calls", 0), 0),
    "max_retries": _Option((int, _NONE), _check_at_least("max_retries", -1), 3),
    "num_returns": _Option((int, str, _NONE), _check_num_returns, 1),
    "retry_exceptions": _Option((bool, list, tuple), _check_retry_exceptions, False),
    "_generator_backpressure_num_objects": _Option((int, _NONE), _check_backpressure),
})

ACTOR_OPTIONS: Dict[str, _Option] = dict(COMMON_OPTIONS, **{
    "concurrency_groups": _Option((list, dict, _NONE)),
    "lifetime": _Option((str, _NONE), _check_lifetime),
    "max_concurrency": _Option((int, _NONE), _check_max_concurrency),
    "max_restarts": _Option((int,), _check_at_least("max_restarts", -1), 0),
    "max_task_retries": _Option((int,), _check_at_least("max_task_retries", -1), 0),
    "max_pending_calls": _Option((int,), _check_max_pending, -1),
    "namespace": _Option((str, _NONE)),
    "get_if_exists": _Option((bool,), None, False),
    "allow_out_of_order_execution": _Option((bool,), None, False),
    "_max_task_retries_inherited": _Option((bool,)),
})

METHOD_OPTIONS: Dict[str, _Option] = {
    "num_returns": TASK_OPTIONS["num_returns"],
    "max_task_retries": _Option((int, _NONE), _check_at_least("max_task_retries", -1)),
    "retry_exceptions": TASK_OPTIONS["retry_exceptions"],
    "concurrency_group": _Option((str, _NONE)),
    "name": _Option((str, _NONE)),
    "enable_task_events": _Option((bool,)),
    "_generator_backpressure_num_objects": _Option((int, _NONE), _check_backpressure),
    "tensor_transport": _Option((str, _NONE)),
}


def validate(options: Dict[str, Any], table: Dict[str, _Option], what: str) -> Dict[str, Any]:
    """Check every keyword against ``table``; return a copy. Raises naming the keyword."""
    for key, value in options.items():
        spec = table.get(key)
        if spec is None:
            raise ValueError(f"Invalid option keyword {key!r} for {what}. Valid ones are {sorted(table)}")
        if isinstance(value, bool) and bool not in spec.types and object not in spec.types:
            raise TypeError(f"The type of keyword {key!r} must be {_names(spec.types)}, but received type bool")
        if not isinstance(value, spec.types):
            raise TypeError(f"The type of keyword {key!r} must be {_names(spec.types)}, "
                            f"but received type {type(value).__name__}")
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise ValueError(problem)
    return dict(options)


def _names(types: Tuple[type, ...]) -> str:
    return " or ".join("None" if t is _NONE else t.__name__ for t in types)


def validate_task_options(options: Dict[str, Any], in_options_call: bool) -> Dict[str, Any]:
    if in_options_call and "max_calls" in options:
        raise ValueError("Setting 'max_calls' is not supported in '.options()'; pass it to @remote")
    checked = validate(options, TASK_OPTIONS, "remote functions")
    _check_strategy_combination(checked)
    return checked


def validate_actor_options(options: Dict[str, Any], in_options_call: bool) -> Dict[str, Any]:
    if in_options_call and "concurrency_groups" in options:
        raise ValueError("Setting 'concurrency_groups' is not supported in '.options()'")
    checked = validate(options, ACTOR_OPTIONS, "actors")
    if checked.get("get_if_exists") and not checked.get("name"):
        raise ValueError("The actor option get_if_exists=True needs a name: pass name=...")
    if "name" in checked and checked["name"] is not None and checked["name"] == "":
        raise ValueError("name: an actor name must be a non-empty string")
    _check_strategy_combination(checked)
    return checked


def _check_strategy_combination(options: Dict[str, Any]) -> None:
    legacy = options.get("placement_group", "default") not in ("default", None)
    if legacy and options.get("scheduling_strategy") is not None:
        raise ValueError("placement_group and scheduling_strategy cannot be given together; "
                         "use PlacementGroupSchedulingStrategy")
    if legacy:
        warnings.warn("placement_group parameter is deprecated. Use scheduling_strategy="
                      "PlacementGroupSchedulingStrategy(...) instead, see the usage at "
                      "https://docs.ray.io/en/master/ray-core/package-ref.html#ray-remote.",
                      DeprecationWarning, stacklevel=4)


def resource_demand(options: Dict[str, Any], default_cpus: float) -> Dict[str, float]:
    """The resources one task or actor asks for, as the scheduler counts them."""
    demand: Dict[str, float] = {}
    cpus = options.get("num_cpus")
    demand["CPU"] = float(default_cpus if cpus is None else cpus)
    gpus = options.get("num_gpus")
    if gpus:
        demand["GPU"] = float(gpus)
    if options.get("memory"):
        demand["memory"] = float(options["memory"])
    for key, amount in (options.get("resources") or {}).items():
        if amount:
            demand[key] = float(amount)
    if options.get("accelerator_type"):
        demand[f"accelerator_type:{options['accelerator_type']}"] = 0.001
    return {k: v for k, v in demand.items() if v}


class RetryPolicy:
    """Which application exceptions a task retries, shipped pickled to the executing rank."""

    __slots__ = ("blob",)

    def __init__(self, retry_exceptions: Any):
        if retry_exceptions is True or retry_exceptions is False:
            self.blob = retry_exceptions
        else:
            self.blob = serialization.dumps_function(tuple(retry_exceptions))

    @staticmethod
    def matches(blob: Any, exc: BaseException) -> bool:
        if blob is True or blob is False:
            return blob
        return isinstance(exc, _load_classes(blob))


_class_cache: Dict[bytes, tuple] = {}


def _load_classes(blob: bytes) -> tuple:
    classes = _class_cache.get(blob)
    if classes is None:
        classes = _class_cache[blob] = serialization.loads(blob)
    return classes


_warned: set = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, stacklevel=3)


def positional_arity(signature: Any) -> int:
    """How many arguments a call passes when it passes exactly the signature's plain
    positional parameters (no defaults, no *args/**kwargs/keyword-only); -1 when there is no such
    simple shape. A call of that shape needs no ``Signature.bind`` (about 5 µs) to be checked."""
    if signature is None:
        return -1
    import inspect
    plain = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY
    params = list(signature.parameters.values())
    if all(p.kind in plain and p.default is inspect.Parameter.empty for p in params):
        return len(params)
    return -1
