"""Helpers shared by the case modules (Ray's test utilities, rebuilt for hpcray)."""

import asyncio
import os
import time
import uuid

import hpcray as ray


class CaseSkipped(Exception):
    """Raised by a case that cannot apply in this launch mode; reported as skipped, with why."""


def skip(reason: str) -> None:
    raise CaseSkipped(reason)


def wait_for_condition(predicate, timeout=10.0, retry_interval_ms=20):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:  # keep polling; report the last error
            last = exc
        time.sleep(retry_interval_ms / 1000)
    raise RuntimeError(f"condition not met in {timeout} s (last error: {last!r})")


def scratch_file(stem: str) -> str:
    """A fresh path in the shared scratch folder (same file system for every rank)."""
    folder = os.environ.get("CASE_TMP", "/tmp")
    return os.path.join(folder, f"{stem}-{uuid.uuid4().hex}")


def count_lines(path: str) -> int:
    try:
        with open(path) as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def append_line(path: str, text: str = "x") -> None:
    with open(path, "a") as handle:
        handle.write(text + "\n")


def raises(exc_type, function, *args, match=None, **kwargs):
    """Assert that function(*args) raises exc_type (message containing ``match``); return it."""
    try:
        function(*args, **kwargs)
    except exc_type as exc:
        if match is not None and match not in str(exc):
            raise AssertionError(f"{exc_type.__name__} message {str(exc)!r} lacks {match!r}") from exc
        return exc
    raise AssertionError(f"{getattr(function, '__name__', function)} did not raise {exc_type.__name__}")


@ray.remote
class SignalActor:
    """Ray's test helper: ``wait.remote()`` blocks until ``send.remote()`` is called."""

    def __init__(self):
        self.event = asyncio.Event()

    async def send(self):
        self.event.set()

    async def wait(self):
        await self.event.wait()
