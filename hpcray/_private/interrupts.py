"""Ctrl-C on the driver: a KeyboardInterrupt never cuts a runtime call in the middle.

Python raises KeyboardInterrupt in the main thread at the next bytecode boundary, wherever that
is. Inside the runtime that can tear a step in two: a function marked as sent to the workers but
never sent (every later call of it then fails), a request recorded but never posted (its ``get``
waits forever), a lock taken but never released. So while the main thread is inside a *shielded*
call (``get``, ``wait``, ``put``, ``.remote()``, ``cancel``, ``kill``, a generator's ``next``,
and the loop turns it runs itself in ``comm.CommLoop.lend``), the driver's SIGINT handler
(``runtime._install_driver_signals``) only notes the interrupt; it is raised when the outermost
shielded call returns, or earlier at a point where a waiting call has nothing half done
(``raise_pending``; waits on the main thread wake every ``WAKE_S`` to look), so Ctrl-C still
ends a long ``get`` within a fraction of a second.

Both fields are read and written on the main thread only (Python runs signal handlers there).
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Shield:
    """How deep the main thread is in shielded calls, and whether a Ctrl-C waits to be raised."""

    __slots__ = ("main", "depth", "pending")

    def __init__(self) -> None:
        self.main = threading.main_thread().ident
        self.depth = 0  # shielded calls the main thread is inside
        self.pending = False  # a Ctrl-C arrived while depth > 0

    def on_main(self) -> bool:
        return threading.get_ident() == self.main

    def defer(self) -> bool:
        """From the SIGINT handler: True when the interrupt is noted for later."""
        if self.depth:
            self.pending = True
            return True
        return False

    def raise_pending(self) -> None:
        """Raise a noted Ctrl-C now (the caller is on the main thread, at a point where leaving
        by an exception leaves nothing half done)."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


SHIELD = Shield()


def shielded(function: F) -> F:
    """Run ``function`` shielded from Ctrl-C on the main thread (other threads: as it is)."""
    shield = SHIELD
    get_ident = threading.get_ident

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        if get_ident() != shield.main:
            return function(*args, **kwargs)
        # (no call between the increment and the try: an interrupt cannot land in between)
        shield.depth += 1
        try:
            return function(*args, **kwargs)
        finally:
            shield.depth -= 1
            if not shield.depth:
                shield.raise_pending()
    return call  # type: ignore[return-value]
