"""Helpers shared by the case modules (Ray's test utilities, rebuilt for hpcray)."""

import asyncio
import gc
import os
import time
import uuid

import hpcray as ray


class CaseSkipped(Exception):
    """Raised by a case that cannot apply in this launch mode; reported as skipped, with why."""


def skip(reason: str) -> None:
    raise CaseSkipped(reason)


#: how long a case's tasks and actors get to end after it returns (its refs are gone by then)
SETTLE_S = 15.0


def run_case(case, settle_s: float = SETTLE_S) -> None:
    """Run one case in a session that the module's cases share. So that no case leaves work
    behind for the next, every resource of the job must be free again within ``settle_s`` of
    its end (its tasks ended, its actors gone), or the case fails naming what is still held."""
    case()
    deadline = time.monotonic() + settle_s
    while True:
        gc.collect()
        total = ray.cluster_resources()
        free = ray.available_resources()
        held = {key: round(amount - free.get(key, 0.0), 6) for key, amount in total.items()
                if free.get(key, 0.0) < amount - 1e-9}
        if not held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{case.__name__} left resources held {settle_s:g} s after it ended "
                                 f"(a task still running or an actor still alive): {held}")
        time.sleep(0.05)


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
