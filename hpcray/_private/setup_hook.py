"""``runtime_env={"worker_process_setup_hook": ...}`` (Ray's): what each worker process runs once,
before its tasks, for a session: a function (sent pickled) or a ``"module.function"`` name.

A hook that fails does not stop the rank: every task and actor call sent there fails with
``RuntimeEnvSetupError`` naming the hook and its error, as on Ray.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any, Optional, Union

from .. import exceptions
from .serialization import SerializedValue, dumps_function, loads, serialize

Packed = Union[bytes, str]


def check(hook: Any) -> Optional[str]:
    """What is wrong with ``hook`` as a setup hook, or None."""
    if callable(hook) or (isinstance(hook, str) and "." in hook.strip(".")):
        return None
    return ("runtime_env['worker_process_setup_hook'] must be a callable or a 'module.function' "
            f"string, got {hook!r}")


def pack(hook: Any) -> Optional[Packed]:
    if hook is None:
        return None
    return hook if isinstance(hook, str) else dumps_function(hook)


def run(packed: Optional[Packed], rank: int) -> Optional[SerializedValue]:
    """Run the hook here; the error every task sent here then gets, or None."""
    if packed is None:
        return None
    try:
        if isinstance(packed, str):
            module_name, _, name = packed.rpartition(".")
            hook = getattr(importlib.import_module(module_name), name)
        else:
            hook = loads(packed)
        hook()
        return None
    except BaseException as exc:  # the user's hook: its failure is the tasks' error, not the rank's
        described = packed if isinstance(packed, str) else "the worker_process_setup_hook"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return serialize(exceptions.RuntimeEnvSetupError(
            f"{described} failed on rank {rank}, so tasks cannot run there:\n{text}"), is_error=True)
