"""Remote functions: ``@hpcray.remote`` on a function, ``.options()`` and ``.remote()``.

Mirrors Ray's ``ray.remote_function``. A function is pickled (cloudpickle, by value where
needed) on its first ``.remote()`` in a session and shipped to each rank once, not per call.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional, Tuple

from ._private import api
from ._private import calls
from ._private import options as opt


class RemoteFunction:
    """A function decorated with ``@hpcray.remote``. Call ``.remote()`` to run it as a task."""

    def __init__(self, function: Any, options: Dict[str, Any]):
        if inspect.iscoroutinefunction(function):
            raise ValueError("'async def' should not be used for remote tasks. You can wrap the async "
                             "function with `asyncio.run(f())`, or use an async actor.")
        self._function = function
        self._default_options = opt.validate_task_options(options, in_options_call=False)
        self._name = getattr(function, "__qualname__", getattr(function, "__name__", "function"))
        self._is_generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
        self._plan = calls.TaskPlan(self._default_options, self._name, self._is_generator)
        try:
            self._signature: Optional[inspect.Signature] = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        self._arity = opt.positional_arity(self._signature)
        self._export = calls.Export(function)
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
        return _FunctionWithOptions(self, calls.TaskPlan(merged, self._name, self._is_generator))

    def bind(self, *args, **kwargs):
        """A node of a graph (``hpcray.dag``): this task, run by ``execute()``."""
        from .dag import FunctionNode
        return FunctionNode(self, args, kwargs)

    def _remote(self, args=None, kwargs=None, **options):
        """Ray's older form: ``f._remote(args=[...], kwargs={...}, **options)``."""
        target = self.options(**options) if options else self
        return target.remote(*(args or ()), **(kwargs or {}))

    def _submit(self, args: Tuple[Any, ...], kwargs: Dict[str, Any], plan: calls.TaskPlan):
        session = api.ensure_session()
        if self._signature is not None and (kwargs or len(args) != self._arity):
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{self._name}.remote(): {exc}") from None
        return calls.submit_task(session, self._export, plan, args, kwargs)


class _FunctionWithOptions:
    """What ``RemoteFunction.options()`` returns."""

    def __init__(self, parent: RemoteFunction, plan: calls.TaskPlan):
        self._parent = parent
        self._plan = plan

    def remote(self, *args, **kwargs):
        return self._parent._submit(args, kwargs, self._plan)

    def options(self, **options) -> "_FunctionWithOptions":
        checked = opt.validate_task_options(options, in_options_call=True)
        merged = dict(self._plan.options)
        merged.update(checked)
        return _FunctionWithOptions(self._parent, calls.TaskPlan(merged, self._parent._name,
                                                                 self._parent._is_generator))

    def bind(self, *args, **kwargs):
        """A node of a graph (``hpcray.dag``): this task, run by ``execute()``."""
        from .dag import FunctionNode
        return FunctionNode(self, args, kwargs)


def _rebuild_remote_function(function: Any, options: Dict[str, Any]) -> RemoteFunction:
    return RemoteFunction(function, options)
