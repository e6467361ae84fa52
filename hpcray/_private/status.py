"""The job's status on the driver's stderr, asked for without ports: ``SIGUSR1`` to the driver
(under Slurm: ``scancel --signal=USR1 --batch JOBID`` reaches the batch script's processes) and,
with ``HPCRAY_STATUS_S=N``, every N seconds.

    SIGUSR1 handler (main thread) ─► StatusReporter.request() ─► status thread
        ─► CommLoop.call(Scheduler.status_view) on the comm thread ─► format_status ─► stderr

The view is made on the comm thread, where the scheduler's tables are consistent; the table is
written by a thread of its own, so neither the signal handler nor the loop does any I/O.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from .timeline import RECORDER

MB = 1 << 20


def _megabytes(memory: Optional[Dict[str, int]]) -> Tuple[str, str]:
    """(private MB, arena "used/size MB") of a rank's memory report; "?" where it did not answer."""
    if not memory:
        return "?", "?"
    arena = f"{memory['arena_used'] / MB:.0f}/{memory['arena_bytes'] / MB:.0f}" if memory["arena_bytes"] else "-"
    return f"{memory['private_bytes'] / MB:.1f}", arena


def format_status(view: Dict[str, Any], running_s: float) -> str:
    """The status table: one line per worker rank, then the work no rank holds."""
    minutes, seconds = divmod(int(running_s), 60)
    memory = dict(view.get("memory") or {})
    if memory.get(0):  # rank 0 also keeps the values of the scheduler's object table
        memory[0] = dict(memory[0], private_bytes=memory[0]["private_bytes"] + view["table_bytes"])
    lines = [f"hpcray status at {time.strftime('%H:%M:%S')} (session running {minutes}m {seconds:02d}s)",
             f"{'rank':>5} {'host':16} {'pid':>8} {'CPU used':>9} {'running':>8} {'queued':>7} "
             f"{'finished':>9} {'failed':>7} {'actors':>7} {'objects MB':>11} {'arena MB':>11}"]
    for row in view["ranks"]:
        cpus = f"{row['cpu_used']:g}/{row['cpu_total']:g}"
        private, arena = _megabytes(memory.get(row["rank"]))
        lines.append(f"{row['rank']:>5} {row['host'][:16]:16} {row['pid']:>8} {cpus:>9} {row['running']:>8} "
                     f"{row['queued']:>7} {row['finished']:>9} {row['failed']:>7} {row['actors']:>7} "
                     f"{private:>11} {arena:>11}")
    if all(row["rank"] != 0 for row in view["ranks"]):  # the driver serves no tasks: its own line
        private, arena = _megabytes(memory.get(0))
        lines.append(f"driver (rank 0): objects {private} MB, arena {arena} MB")
    lines.append(f"running: tasks holding the rank's resources; queued: tasks waiting there and calls "
                 f"sent to its actors; objects: values kept there for others, in private memory and "
                 f"in its arena segment (used/size). Not on any rank: {view['ready']} ready to place, "
                 f"{view['waiting_for_arguments']} waiting for arguments. Objects in the table: "
                 f"{view['objects']}.")
    for name, demand, count in view["infeasible"]:
        lines.append(f"pending for good: {count} x {name} needs {demand}, which no rank of this job has")
    for thread, asked, needed, here, waited_s in view.get("waits", ()):
        lines.append(f"driver thread {thread} waits in get/wait: {here} of {needed} objects ready"
                     + (f" ({asked} asked)" if asked != needed else "") + f", for {waited_s:.1f} s")
    return "\n".join(lines) + "\n"


class StatusReporter:
    """Writes the status table when asked (``request``) and every ``every_s`` seconds (None:
    only when asked), from a thread of its own, until ``stop``."""

    def __init__(self, view: Callable[[], Dict[str, Any]], every_s: Optional[float]):
        self.view = view
        self.every_s = every_s
        self.started = time.monotonic()
        self.wake = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="hpcray-status", daemon=True)
        self.thread.start()

    def request(self) -> None:
        self.wake.set()

    def stop(self) -> None:
        self.stopped = True
        self.wake.set()

    def _run(self) -> None:
        while True:
            self.wake.wait(self.every_s)
            self.wake.clear()
            if self.stopped:
                return
            try:
                text = format_status(self.view(), time.monotonic() - self.started)
            except Exception as exc:  # (the loop busy past the call's timeout, say): say so, go on
                text = f"hpcray status: not available now ({type(exc).__name__}: {exc})\n"
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except Exception:  # no stderr: nothing to show it on
                pass


def rank_report(what: str, host: str, plane: Any) -> Any:
    """What a rank answers RANK_REPORT_REQ with: its "timeline" (host, events, dropped), or its
    "memory" (``ObjectPlane.memory_report``)."""
    if what == "timeline":
        return (host,) + RECORDER.snapshot()
    if what == "memory":
        return plane.memory_report() if plane is not None else {}
    raise ValueError(f"unknown rank report {what!r}")


_reporters: List[StatusReporter] = []  # the live session's, for the signal handler


def start_reporter(view: Callable[[], Dict[str, Any]], every_s: Optional[float]) -> StatusReporter:
    """Start the driver's reporter; SIGUSR1 asks it for the table (where the program has not
    taken SIGUSR1 for itself, and init() runs in the main thread)."""
    reporter = StatusReporter(view, every_s)
    _reporters[:] = [reporter]
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1") \
            and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, _on_usr1):
        signal.signal(signal.SIGUSR1, _on_usr1)
    return reporter


def _on_usr1(signum: int, frame: Any) -> None:
    for reporter in _reporters:
        reporter.request()
