"""``ActorPool``: spread work over a fixed set of actors (Ray's ``ray.util.ActorPool``)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from .._private import api


class ActorPool:
    """Submit ``fn(actor, value)`` calls to idle actors; results come back in submit order
    (``get_next``) or as they finish (``get_next_unordered``)."""

    def __init__(self, actors: List[Any]):
        self._idle: List[Any] = list(actors)
        self._busy: Dict[Any, Tuple[int, Any]] = {}  # result ref -> (submit index, actor)
        self._by_index: Dict[int, Any] = {}
        self._next_submit = 0
        self._next_return = 0
        self._waiting: List[Tuple[Callable, Any]] = []

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Apply ``fn`` to every value (submitted now, as on Ray); iterate the results in the
        order of ``values``."""
        self._drain_finished()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next)

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Like ``map`` but yields each result as soon as it is ready."""
        self._drain_finished()
        for value in values:
            self.submit(fn, value)
        return self._results(self.get_next_unordered)

    def _results(self, next_result: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield next_result()

    def _drain_finished(self) -> None:
        while self.has_next():
            try:
                self.get_next(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass

    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or once one is free."""
        if not self._idle:
            self._waiting.append((fn, value))
            return
        actor = self._idle.pop()
        ref = fn(actor, value)
        key = tuple(ref) if isinstance(ref, list) else ref
        self._busy[key] = (self._next_submit, actor)
        self._by_index[self._next_submit] = ref
        self._next_submit += 1

    def has_next(self) -> bool:
        """Whether any result is still to be fetched."""
        return bool(self._busy)

    def get_next(self, timeout: Optional[float] = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submit order. TimeoutError after ``timeout`` seconds; with
        ``ignore_if_timedout`` that result is skipped (its actor is freed)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return >= self._next_submit:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        ref = self._by_index[self._next_return]
        timed_out = False
        if timeout is not None:
            ready, _ = api.wait(list(ref) if isinstance(ref, list) else [ref],
                                num_returns=len(ref) if isinstance(ref, list) else 1, timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise TimeoutError("Timed out waiting for result")
                timed_out = True
        del self._by_index[self._next_return]
        self._next_return += 1
        key = tuple(ref) if isinstance(ref, list) else ref
        _, actor = self._busy.pop(key)
        self._return_actor(actor)
        if timed_out:
            raise TimeoutError(f"Timed out waiting for result. The task {ref} has been ignored.")
        return api.get(ref)

    def get_next_unordered(self, timeout: Optional[float] = None, ignore_if_timedout: bool = False) -> Any:
        """Any finished result (the first to be ready)."""
        if not self.has_next():
            raise StopIteration("No more results to get")
        refs = [k[0] if isinstance(k, tuple) else k for k in self._busy]
        ready, _ = api.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError("Timed out waiting for result")
        first = ready[0]
        key = next(k for k in self._busy if (k[0] if isinstance(k, tuple) else k) == first)
        index, actor = self._busy.pop(key)
        self._by_index.pop(index, None)
        self._next_return = max(self._next_return, index + 1)
        self._return_actor(actor)
        return api.get(list(key) if isinstance(key, tuple) else key)

    def _return_actor(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._waiting:
            self.submit(*self._waiting.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits."""
        return bool(self._idle) and not self._waiting

    def pop_idle(self) -> Optional[Any]:
        """Remove and return an idle actor, or None."""
        return self._idle.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (ValueError if it is already in it)."""
        if actor in self._idle or any(actor == a for _, a in self._busy.values()):
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)
