"""Progress bars that work from tasks and actors, drawn on the driver's terminal (Ray's
``ray.experimental.tqdm_ray``)::

    from hpcray.experimental.tqdm_ray import tqdm

    @hpcray.remote
    def work(name):
        for x in tqdm(range(100), desc=name):
            ...

A bar in a task on any rank sends its state to the driver at most every ``flush_interval_s``
(and when it starts, changes its description and closes); the driver draws every bar: in place
on a terminal, as occasional lines in a log file. ``safe_print`` prints without breaking the
bars.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Dict, Iterable, Iterator, Optional

from .._private import progress
from .._private.config import PROGRESS_FLUSH_S

__all__ = ["tqdm", "safe_print", "instance"]


class tqdm:  # noqa: N801 (Ray's name)
    """A progress bar: iterate over ``iterable`` through it, or call ``update(n)``."""

    def __init__(self, iterable: Optional[Iterable[Any]] = None, desc: Optional[str] = None,
                 total: Optional[int] = None, unit: Optional[str] = None, position: Optional[int] = None,
                 flush_interval_s: Optional[float] = None):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except (TypeError, AttributeError):
                total = None
        if flush_interval_s is not None and (not isinstance(flush_interval_s, (int, float)) or flush_interval_s < 0):
            raise ValueError(f"tqdm(flush_interval_s={flush_interval_s!r}): must be a number >= 0")
        self._iterable = iterable
        self._desc = desc
        self.total = total
        self._unit = unit
        self._pos = position
        self._x = 0
        self._closed = False
        self._uuid = uuid.uuid4().hex
        self._flush_interval_s = PROGRESS_FLUSH_S if flush_interval_s is None else flush_interval_s
        self._flushed_at = 0.0
        self._flush()

    @property
    def n(self) -> int:
        """How far the bar has come."""
        return self._x

    def set_description(self, desc: Optional[str] = None, refresh: bool = True) -> None:
        self._desc = desc
        self._flush()

    def update(self, n: int = 1) -> None:
        self._x += n
        if time.monotonic() - self._flushed_at >= self._flush_interval_s:
            self._flush()

    def refresh(self) -> None:
        self._flush()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._flush()

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise ValueError("No iterable provided to this tqdm bar")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "tqdm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _state(self) -> Dict[str, Any]:
        return {"uuid": self._uuid, "desc": self._desc, "x": self._x, "total": self.total,
                "unit": self._unit, "pos": self._pos, "closed": self._closed}

    def _flush(self) -> None:
        self._flushed_at = time.monotonic()
        progress.send(self._state())


def safe_print(*args: Any, **kwargs: Any) -> None:
    """``print``, without breaking the progress bars on the driver's terminal."""
    progress.driver_bars().safe_print(*args, **kwargs)


def instance() -> progress.Bars:
    """The driver's bars (``snapshot()`` gives every bar's latest state)."""
    return progress.driver_bars()
