"""Ray's DAG API (``ray.dag``): build a graph of task and actor calls with ``.bind()``, then run it
with ``execute()``.

    with InputNode() as inp:                   # the value(s) given to execute()
        a = preprocess.bind(inp)               # FunctionNode
        model = Model.bind(weights)            # ClassNode: an actor, made once per execute()
        dag = model.predict.bind(a, inp.scale)  # ClassMethodNode (inp.x, inp[0]: parts of the input)
    ref = dag.execute(batch)                   # an ObjectRef (a list for MultiOutputNode)

``execute()`` submits every node once, upstream first; a node's result reaches the nodes after
it as an ObjectRef, so they run as soon as it is ready, on any rank. A node used by several
others runs once per ``execute()``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple


class DAGNode:
    """A call in a graph: its arguments may be other nodes."""

    def __init__(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        self._bound_args = args
        self._bound_kwargs = kwargs

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph ending here with these inputs; this node's ObjectRef (or refs)."""
        return self._run(_Execution(args, kwargs))

    def _run(self, execution: "_Execution") -> Any:
        done = execution.results.get(id(self), _MISSING)
        if done is _MISSING:
            done = execution.results[id(self)] = self._submit(execution)
        return done

    def _resolved(self, execution: "_Execution") -> Tuple[Tuple[Any, ...], Dict[str, Any]]:
        args = tuple(_resolve(a, execution) for a in self._bound_args)
        kwargs = {k: _resolve(v, execution) for k, v in self._bound_kwargs.items()}
        return args, kwargs

    def _submit(self, execution: "_Execution") -> Any:
        raise NotImplementedError


class _Execution:
    def __init__(self, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        self.args = args
        self.kwargs = kwargs
        self.results: Dict[int, Any] = {}


_MISSING = object()


def _resolve(value: Any, execution: _Execution) -> Any:
    if isinstance(value, DAGNode):
        return value._run(execution)
    if isinstance(value, list):
        return [_resolve(v, execution) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, execution) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, execution) for k, v in value.items()}
    return value


class InputNode(DAGNode):
    """The value given to ``execute()`` (one positional value, or all of them: ``inp[i]``,
    ``inp.name`` for keyword arguments)."""

    def __init__(self) -> None:
        super().__init__((), {})

    def __enter__(self) -> "InputNode":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def __getitem__(self, key: Any) -> "InputAttributeNode":
        return InputAttributeNode(self, key, "item")

    def __getattr__(self, name: str) -> "InputAttributeNode":
        if name.startswith("_"):
            raise AttributeError(name)
        return InputAttributeNode(self, name, "attr")

    def _submit(self, execution: _Execution) -> Any:
        if len(execution.args) == 1 and not execution.kwargs:
            return execution.args[0]
        if not execution.args and not execution.kwargs:
            raise ValueError("execute(): this graph reads its InputNode, but no input was given")
        return execution.args


class InputAttributeNode(DAGNode):
    """``inp[key]`` or ``inp.name``: a part of the input."""

    def __init__(self, parent: InputNode, key: Any, how: str):
        super().__init__((), {})
        self._parent = parent
        self._key = key
        self._how = how

    def _submit(self, execution: _Execution) -> Any:
        if self._how == "attr" and self._key in execution.kwargs:
            return execution.kwargs[self._key]
        if self._how == "item" and isinstance(self._key, str) and self._key in execution.kwargs:
            return execution.kwargs[self._key]
        value = execution.args if len(execution.args) != 1 or execution.kwargs else execution.args[0]
        try:
            return value[self._key] if self._how == "item" else getattr(value, self._key)
        except (KeyError, IndexError, AttributeError, TypeError) as exc:
            raise ValueError(f"execute(): the input has no {'item' if self._how == 'item' else 'attribute'} "
                             f"{self._key!r} that the graph reads ({type(exc).__name__}: {exc})") from None


class FunctionNode(DAGNode):
    """``f.bind(...)``: a task."""

    def __init__(self, function: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        super().__init__(args, kwargs)
        self._function = function  # a remote function, or one with options

    def _submit(self, execution: _Execution) -> Any:
        args, kwargs = self._resolved(execution)
        return self._function.remote(*args, **kwargs)


class ClassNode(DAGNode):
    """``Actor.bind(...)``: an actor, made once per ``execute()``; ``.method.bind(...)`` on it."""

    def __init__(self, actor_class: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
        super().__init__(args, kwargs)
        self._actor_class = actor_class

    def __getattr__(self, name: str) -> "_UnboundMethod":
        if name.startswith("_"):
            raise AttributeError(name)
        return _UnboundMethod(self, name)

    def _submit(self, execution: _Execution) -> Any:
        args, kwargs = self._resolved(execution)
        return self._actor_class.remote(*args, **kwargs)


class _UnboundMethod:
    def __init__(self, target: Any, name: str, options: Optional[Dict[str, Any]] = None):
        self._target = target
        self._name = name
        self._options = options or {}

    def options(self, **options: Any) -> "_UnboundMethod":
        return _UnboundMethod(self._target, self._name, dict(self._options, **options))

    def bind(self, *args: Any, **kwargs: Any) -> "ClassMethodNode":
        return ClassMethodNode(self._target, self._name, self._options, args, kwargs)


class ClassMethodNode(DAGNode):
    """``actor_node.method.bind(...)`` or ``handle.method.bind(...)``: an actor call."""

    def __init__(self, target: Any, name: str, options: Dict[str, Any], args: Tuple[Any, ...],
                 kwargs: Dict[str, Any]):
        super().__init__(args, kwargs)
        self._target = target  # a ClassNode, or an existing actor handle
        self._name = name
        self._options = options

    def _submit(self, execution: _Execution) -> Any:
        handle = self._target._run(execution) if isinstance(self._target, DAGNode) else self._target
        method = getattr(handle, self._name)
        if self._options:
            method = method.options(**self._options)
        args, kwargs = self._resolved(execution)
        return method.remote(*args, **kwargs)


class MultiOutputNode(DAGNode):
    """Several outputs: ``execute()`` returns a list of their refs."""

    def __init__(self, outputs: List[DAGNode]):
        if not isinstance(outputs, (list, tuple)) or not all(isinstance(o, DAGNode) for o in outputs):
            raise TypeError("MultiOutputNode takes a list of DAG nodes")
        super().__init__(tuple(outputs), {})

    def _submit(self, execution: _Execution) -> Any:
        return [node._run(execution) for node in self._bound_args]


__all__ = ["DAGNode", "InputNode", "InputAttributeNode", "FunctionNode", "ClassNode", "ClassMethodNode",
           "MultiOutputNode"]
