"""The events behind ``hpcray.timeline()``: what ran where and when, as Chrome trace events.

Each process records into ``RECORDER`` (a bounded deque: recording costs one append per task or
call, ~1 µs against the ~150 µs a task costs). ``timeline()`` asks the scheduler, which asks every
worker rank for its events and answers once all have (``Scheduler.gather_reports``):

    driver: QUERY "timeline" ─► scheduler ─► RANK_REPORT_REQ to each worker ─► RANK_REPORT back
            ◄─ OBJECT(reply, {rank: (host, events, dropped)}) ◄─┘ (once every worker answered)

Times are wall-clock (``time.time``), comparable across the ranks of one host and, as far as the
hosts' clocks agree, across hosts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from threading import get_ident
from collections import deque
from typing import Any, Dict, List, Tuple

from .config import TIMELINE_MAX_EVENTS

logger = logging.getLogger("hpcray")

class Recorder:
    """This process's events, the newest ``TIMELINE_MAX_EVENTS`` of them: (name, category, start
    s, duration s, thread id, detail: (task id, submitted, owner rank), a dict or None). Recording
    is one tuple appended
    (formatting waits for ``snapshot``): it runs once per task and call."""

    def __init__(self, limit: int = TIMELINE_MAX_EVENTS):
        self.events: deque = deque(maxlen=limit)
        self.dropped = 0

    def keep(self, limit: int) -> None:
        """Keep the newest ``limit`` events from now on; 0: record nothing (``complete`` is then
        a call that returns at once: the benchmark's baseline for what recording costs)."""
        if limit == self.events.maxlen:
            return
        self.events = deque(self.events, maxlen=limit)
        if limit:
            self.__dict__.pop("complete", None)
        else:
            self.complete = _record_nothing  # type: ignore[method-assign]

    def complete(self, name: str, category: str, start: float, detail: Any = None) -> None:
        """An event that began at ``start`` (``time.time()``) ends now, on this thread."""
        events = self.events
        if len(events) == events.maxlen:
            if not self.dropped:
                logger.warning("hpcray: the timeline keeps the last %d events of each rank; older "
                               "ones are dropped (the trace says how many)", events.maxlen)
            self.dropped += 1
        events.append((name, category, start, time.time() - start, get_ident(), detail))

    def snapshot(self) -> Tuple[List[tuple], int]:
        """The events as they travel: (name, category, start, duration, thread id, thread name,
        args or None) each, and how many older ones were dropped."""
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        out = []
        for name, category, start, duration, tid, detail in list(self.events):
            if type(detail) is tuple:  # a task or call: (task id, submitted at, by which rank)
                args = {"task_id": detail[0].hex(), "submitted": detail[1], "owner": detail[2],
                        "queued_ms": round((start - detail[1]) * 1e3, 3)}
            else:
                args = detail
            out.append((name, category, start, duration, tid, names.get(tid, f"thread {tid}"), args))
        return out, self.dropped

    def clear(self) -> None:
        self.events.clear()
        self.dropped = 0


def _record_nothing(name: str, category: str, start: float, detail: Any = None) -> None:
    pass


RECORDER = Recorder()


def chrome_trace(by_rank: Dict[int, Tuple[str, List[tuple], int]]) -> List[Dict[str, Any]]:
    """Chrome trace events (Perfetto, chrome://tracing): a process per rank, named with its host,
    a thread per thread, one complete ("X") event per recorded event."""
    trace: List[Dict[str, Any]] = []
    submitters = set()
    for rank in sorted(by_rank):
        host, events, dropped = by_rank[rank]
        label = f"rank {rank} ({host})" + (f", {dropped} older events dropped" if dropped else "")
        trace.append({"name": "process_name", "ph": "M", "pid": rank, "tid": 0, "args": {"name": label}})
        named = set()
        for name, category, start, duration, tid, thread_name, args in events:
            if tid not in named:
                named.add(tid)
                trace.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": tid,
                              "args": {"name": thread_name}})
            event = {"name": name, "cat": category, "ph": "X", "pid": rank, "tid": tid,
                     "ts": start * 1e6, "dur": duration * 1e6}
            if args:
                submitted = args.pop("submitted", None)
                owner = args.pop("owner", None)
                if submitted is not None:  # its submission: an instant on the submitter's track
                    submitters.add(owner)
                    trace.append({"name": f"submit {name}", "cat": "submit", "ph": "i", "s": "t",
                                  "pid": owner, "tid": SUBMIT_TRACK, "ts": submitted * 1e6,
                                  "args": {"task_id": args["task_id"]}})
                event["args"] = args
            trace.append(event)
    for rank in sorted(submitters):
        trace.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": SUBMIT_TRACK,
                      "args": {"name": "submissions"}})
    return trace


#: the track (tid) of a rank's submissions in the trace
SUBMIT_TRACK = 0


def write_trace(filename: "str | os.PathLike", trace: List[Dict[str, Any]]) -> None:
    with open(filename, "w") as handle:
        json.dump(trace, handle)
