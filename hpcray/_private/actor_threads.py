"""The threads of a sync or threaded actor: its own, for its whole life.

Ray runs a sync actor's ``__init__`` and every call on one thread, and a threaded actor's calls
(``max_concurrency=N``) on a pool of N threads of its own, one pool per concurrency group. So
thread-local state lasts from call to call: a ``threading.local``, a sqlite connection (usable
only on the thread that opened it), a library's per-thread context. A rank's shared pool would
run each call on whichever thread is free, so each group of such an actor gets a ``ThreadSet``
instead: threads made as calls need them, up to the group's limit (the actor host never runs
more calls of a group at once), and ended when the actor is gone. Async actors keep running on
their event loop's thread.

    ActorHost._start ─► ThreadSet.submit ─► (an idle thread of the set, or a new one)
                                                 │ Executor.run_item: run, settle, report
                                                 │ idle: runs the loop's turns (lend), then sleeps
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Optional

_STOP = None  # what a thread of a closed set takes from the queue


class ThreadSet:
    """Up to ``limit`` threads that run one actor group's work items, in order of submission."""

    __slots__ = ("executor", "name", "limit", "_queue", "_lock", "_threads", "_in_flight", "closed")

    def __init__(self, executor: Any, name: str, limit: int):
        self.executor = executor
        self.name = name
        self.limit = limit
        self._queue: "queue.SimpleQueue[Optional[Callable[[], Any]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._in_flight = 0  # items submitted and not yet run to their end
        self.closed = False

    def submit(self, work: Callable[[], Any]) -> None:
        """Run ``work`` on an idle thread of the set, or on a new one while fewer than ``limit``
        exist (the caller keeps at most ``limit`` items in flight). A closed set takes nothing:
        its actor is gone, and the actor host has failed its calls already."""
        with self._lock:
            if self.closed:
                return
            self._in_flight += 1
            start = self._in_flight > len(self._threads) and len(self._threads) < self.limit
            if start:
                thread = threading.Thread(target=self._main, name=f"{self.name}-{len(self._threads)}",
                                          daemon=True)
                self._threads.append(thread)
        self._queue.put(work)
        if start:
            thread.start()

    def busy(self) -> bool:
        """Whether a thread of the set is running a work item."""
        with self._lock:
            return self._in_flight > 0

    def close(self) -> None:
        """The actor is gone: each thread ends after the item it runs, if any."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(_STOP)

    def _main(self) -> None:
        executor = self.executor
        executor.lends_turns(threading.get_ident())
        while True:
            work = self._next()
            if work is _STOP:
                return
            try:
                executor.run_item(work)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _next(self) -> Optional[Callable[[], Any]]:
        """The next item for this thread. While it has none it runs the loop's turns itself
        (CommLoop.lend), as an idle pool thread does: its last report goes out and the next call
        comes in on this thread, with no hand-off to or from the comm thread. After
        ``guest_idle_s`` without progress, or while another thread holds the turns, it sleeps."""
        work = self._queue
        loop = self.executor.loop
        if loop is not None and loop.lendable and work.empty():
            loop.lend(self._has_work, None, loop.guest_idle_s, hold=self._has_work)
            if work.empty() and loop.commands:
                loop.nudge()  # our report, not sent by us: the comm thread or the guest sends it
        return work.get()

    def _has_work(self) -> bool:
        return not self._queue.empty()
