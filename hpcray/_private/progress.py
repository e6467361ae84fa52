"""Progress bars from any rank, drawn on the driver's terminal (``hpcray.experimental.tqdm_ray``).

    tqdm.update() in a task ─(at most every flush interval)─► PROGRESS (rank → rank 0)
                                        Scheduler.on_progress ─► Bars.show ─► stderr

A bar sends its whole state (a small dict); the driver keeps the latest state of every bar and
redraws. On a terminal the bars sit in place at the bottom (one line each, by position, then by
when they appeared) and are redrawn at most every ``PROGRESS_REDRAW_S``; otherwise (a log file,
Slurm's output) each bar writes a line when it starts, at most every ``PROGRESS_LOG_EVERY_S``
while it moves, and when it closes, so the log shows progress without being flooded.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO

from .config import PROGRESS_LOG_EVERY_S, PROGRESS_REDRAW_S

BAR_WIDTH = 24


def render(state: Dict[str, Any]) -> str:
    """One bar as a line: ``desc: 42%|██████████          | 42/100 it [rank 2]``."""
    desc = state.get("desc") or ""
    x, total, unit = state.get("x", 0), state.get("total"), state.get("unit") or "it"
    where = f" [rank {state['rank']}]" if state.get("rank") else ""
    head = f"{desc}: " if desc else ""
    if total:
        fraction = min(1.0, max(0.0, x / total))
        filled = int(round(fraction * BAR_WIDTH))
        return (f"{head}{int(fraction * 100):3d}%|{'█' * filled}{' ' * (BAR_WIDTH - filled)}| "
                f"{x}/{total} {unit}{where}")
    return f"{head}{x} {unit}{where}"


class Bars:
    """The driver's bars: the latest state of each, drawn on ``stream``."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream
        self.lock = threading.Lock()
        self.states: Dict[str, Dict[str, Any]] = {}  # uuid -> latest state, open bars in order
        self.finished: Dict[str, Dict[str, Any]] = {}  # uuid -> final state of closed bars
        self._drawn = 0  # lines of bars now on the terminal (below everything else)
        self._drawn_at = 0.0
        self._logged_at: Dict[str, float] = {}

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def _terminal(self) -> bool:
        isatty = getattr(self._out(), "isatty", None)
        return bool(isatty and isatty())

    def show(self, state: Dict[str, Any]) -> None:
        """A bar's new state (from any rank, in any thread)."""
        key = state["uuid"]
        with self.lock:
            if key in self.finished:
                return  # a late update of a closed bar
            new = key not in self.states
            closed = bool(state.get("closed"))
            if closed:
                self.states.pop(key, None)
                self.finished[key] = state
            else:
                self.states[key] = state
            if self._terminal():
                self._redraw(force=new or closed, closed=state if closed else None)
            else:
                self._log(key, state, force=new or closed)

    def safe_print(self, *args: Any, **kwargs: Any) -> None:
        """``print`` that keeps the bars below what it writes."""
        with self.lock:
            if self._terminal() and self._drawn:
                self._clear()
                print(*args, **kwargs)
                self._draw()
            else:
                print(*args, **kwargs)

    def snapshot(self) -> Dict[str, Dict[str, Any]]:
        """Every bar's latest state, open and closed (for tests and tools)."""
        with self.lock:
            return {**{k: dict(v) for k, v in self.finished.items()},
                    **{k: dict(v) for k, v in self.states.items()}}

    # ---- drawing (under the lock) -------------------------------------------------------------
    def _ordered(self) -> List[Dict[str, Any]]:
        states = list(self.states.values())
        return sorted(states, key=lambda s: (s.get("pos") is None, s.get("pos") or 0))

    def _clear(self) -> None:
        out = self._out()
        if self._drawn:
            out.write(f"\x1b[{self._drawn}F\x1b[J")  # up to the first bar line, erase below
        self._drawn = 0

    def _draw(self) -> None:
        out = self._out()
        lines = [render(s) for s in self._ordered()]
        for line in lines:
            out.write(line + "\n")
        self._drawn = len(lines)
        out.flush()

    def _redraw(self, force: bool, closed: Optional[Dict[str, Any]]) -> None:
        now = time.monotonic()
        if not force and now - self._drawn_at < PROGRESS_REDRAW_S:
            return
        self._drawn_at = now
        self._clear()
        if closed is not None:  # a closed bar stays in the scrollback, above the live ones
            self._out().write(render(closed) + "\n")
        self._draw()

    def _log(self, key: str, state: Dict[str, Any], force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._logged_at.get(key, 0.0) < PROGRESS_LOG_EVERY_S:
            return
        self._logged_at[key] = now
        if state.get("closed"):
            self._logged_at.pop(key, None)
        out = self._out()
        out.write(render(state) + "\n")
        out.flush()


_BARS: Optional[Bars] = None
_BARS_LOCK = threading.Lock()


def driver_bars() -> Bars:
    """The driver's bars (made on first use)."""
    global _BARS
    with _BARS_LOCK:
        if _BARS is None:
            _BARS = Bars()
        return _BARS


def send(state: Dict[str, Any]) -> None:
    """A bar's state, from this process: drawn here on the driver (or without a session), sent
    to the driver from a worker rank."""
    from . import protocol as P
    from .runtime import PROCESS
    session = PROCESS.session
    if session is None or session.rank == 0:
        driver_bars().show(state)
    else:
        state["rank"] = session.rank
        session.client.post((P.PROGRESS, state))
