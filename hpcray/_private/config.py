"""The one place that reads ``HPCRAY_*`` environment settings, and the home of every tuning
constant.

Every setting is read when ``init()`` runs (``Config.from_env()``), so tests can change the
environment between sessions. A malformed value is an error that names the variable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Optional


# ---- tuning constants (not settings: change them here, measured, with the benchmark) ----------
#: a control batch up to this many bytes travels as one message (comm.MPITransport)
SMALL_FRAME = 64 * 1024
#: buffers from this size leave a batch's pickle stream (no copy into it)
OOB_MIN = 16 * 1024
#: submissions this close to a lent turn wait for the next one (comm.CommLoop.post_and_turn) ...
BATCH_S = 100e-6
#: ... unless this many commands are already waiting
BATCH_MAX = 64
#: a guest with more local work queued sends its reports at most this late
HOLD_S = 500e-6
#: while a guest runs the turns, the comm thread looks again this often. (Every max_sleep_us,
#: 1 ms, woke the comm thread of a rank whose executor thread runs the turns 1,000 times a
#: second, each time taking a core from a thread at work on a 2-core machine.) A guest that leaves
#: without work left behind (to run a long task) is taken over at most this late, plus max_sleep_us.
GUEST_WAIT_S = 5e-3
#: buffers of at least this many bytes move as raw MPI messages, not inside a pickled header
RAW_MIN = 64 * 1024
#: a busy rank is sent enough queued tasks to keep it going this long (scheduler.RankState.depth) ...
LOOKAHEAD_S = 2e-3
#: ... but at most this many beyond those it runs (at least HPCRAY_PREFETCH)
DEPTH_MAX = 64
#: a job of more worker ranks than this places tasks through the scheduler's RoomIndex (which
#: looks only at ranks whose resources changed); a smaller one scans its ranks, which costs
#: less than keeping the index (measured: benchmarks/scheduler_scale.py)
INDEX_RANKS = 8
#: claim cells per worker rank: how many of its queued tasks the scheduler can take back without
#: the rank's help (claims.py); beyond them it asks by message
CLAIM_CELLS = 64
#: a task that ends within this many seconds of being sent to its rank is short: tasks queued
#: behind one of its function need no claim (scheduler._behind_a_long_one)
SHORT_TASK_S = 0.05
#: below this many bytes per rank an object arena is not worth having
MIN_SEGMENT = 64 << 20
#: the arena takes at most this share of the free space in /dev/shm (split among the host's ranks)
SHM_SHARE = 0.5
#: the "memory" resource a host's ranks announce: this share of its memory, split among them
MEMORY_SHARE = 0.7
#: a thread that waits without lending turns (a task in get(), an actor's __init__ on its loop)
#: wakes this often to see a cancel or a killed actor
WAKE_S = 0.1
#: a single-rank loop with nothing to do sleeps this long at a time (a local post wakes it)
SINGLE_RANK_IDLE_S = 0.05
#: the comm thread's last flush of what is queued, as its loop stops
FINAL_FLUSH_S = 5.0
#: ranks that confirmed the end of the session get at least this long to confirm the end of the job
EXIT_ACK_S = 0.5
#: ranks on other hosts get this long to leave after the driver's MPI_Finalize (this host's are
#: watched in /proc)
REMOTE_LEAVE_S = 0.2
#: a worker rank sent SIGTERM ends this much later, its running tasks or not
TERM_GRACE_S = 3.0
#: a worker rank lets tasks about to end finish for this long before the arena is freed
SETTLE_S = 0.5
#: the ranks' agreement on freeing the world window at the end of the job waits this long
ARENA_CLOSE_S = 2.0
#: the timeline keeps this many of each rank's newest events unless HPCRAY_TIMELINE_EVENTS
#: says otherwise (timeline.py); older ones are dropped, counted, and the trace says so
TIMELINE_MAX_EVENTS = 100_000
#: rank 0 moves what the collector tracks out of its way each time its task and object tables
#: have grown by this many entries (gc_policy.py)
GC_FREEZE_AT = 50_000
#: a large copy (into the arena) is cut into pieces of at least this many bytes, one per thread
#: (parallel_copy.py), and uses at most this many threads unless HPCRAY_COPY_THREADS says
COPY_PIECE_MIN = 8 << 20
COPY_THREADS_MAX = 4
#: hpcray.util.state lists the newest this many tasks that ended (state_views.py)
STATE_FINISHED_TASKS = 10_000
#: the status table waits this long for the ranks' memory reports (then shows "?")
STATUS_MEMORY_WAIT_S = 5.0
#: timeline() waits this long for every rank's events
TIMELINE_WAIT_S = 60.0
#: a tqdm_ray bar sends its state at most this often unless asked (Ray's default flush interval)
PROGRESS_FLUSH_S = 1.0
#: the driver redraws its bars on a terminal at most this often
PROGRESS_REDRAW_S = 0.1
#: off a terminal (a log file), a moving bar writes a line at most this often
PROGRESS_LOG_EVERY_S = 5.0
#: a driver and the workers it spawned look this often whether the other's process still exists
PROCESS_WATCH_S = 0.5
#: the longest sleep between polls while the ranks start (``init()`` waits for the other ranks'
#: imports and HELLOs): each oversleep adds to the start, and a few hundred polls cost nothing
START_POLL_MAX_S = 0.001
#: init() ends the program when no worker it is spawning has been alive for this long
SPAWN_GONE_S = 5.0
#: a collective group's members wait this long for each other to join (collective.py)
COLLECTIVE_JOIN_TIMEOUT_S = 60.0
#: a member waiting in a collective polls MPI without sleeping this long, then sleeps up to 1 ms
COLLECTIVE_SPIN_S = 0.05
#: a member waiting in a collective asks this often whether its group was destroyed
COLLECTIVE_CHECK_S = 0.5


#: set by ``python -m hpcray``: every process of the job resolves ``import ray`` to hpcray
#: (ray_alias.py), spawned workers included
RAY_ALIAS_ENV = "HPCRAY_RAY_ALIAS"


def ray_alias_wanted() -> bool:
    return os.environ.get(RAY_ALIAS_ENV) == "1"


def _env_float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _env_int(name: str, default: int, minimum: int = 0) -> int:
    value = _env_float(name, default, minimum)
    if value != int(value):
        raise ValueError(f"{name}={os.environ[name]!r} must be a whole number")
    return int(value)


def _env_choice(name: str, choices: tuple, default: str) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ValueError(f"{name}={value!r} must be one of {', '.join(repr(c) for c in choices)}")
    return value


def _env_optional_float(name: str) -> Optional[float]:
    if os.environ.get(name, "") == "":
        return None
    return _env_float(name, 0.0)


@dataclass
class Config:
    """Settings of one session, from ``HPCRAY_*`` variables (see the README's table)."""

    #: "auto": use MPI when launched by mpiexec/srun or when it can spawn workers; "1": always;
    #: "0": never (one process, tasks in threads).
    mpi: str = "auto"
    #: A driver that is the only process of its job (``python app.py``, ``mpiexec -n 1``) starts
    #: worker ranks with MPI_Comm_spawn: "auto" where spawning can work, "1" always (an error
    #: where it cannot), "0" never (tasks run in threads of the driver's process).
    spawn: str = "auto"
    #: How many worker ranks to spawn (None: init(num_cpus=...), else the CPUs this process may use).
    spawn_workers: Optional[int] = None
    #: CPUs each worker rank advertises (default: SLURM_CPUS_PER_TASK, else 1).
    cpus_per_rank: Optional[float] = None
    #: GPUs each worker rank takes (distinct ones where the host has enough; gpus.share_out).
    gpus_per_rank: Optional[float] = None
    #: each rank keeps the GPUs it sees, as with Slurm's --gpus-per-task (HPCRAY_GPUS_PER_TASK_BOUND=1)
    gpus_bound: bool = False
    #: Custom resources each worker rank advertises, e.g. {"special": 2}.
    resources_per_rank: Dict[str, float] = field(default_factory=dict)
    #: Group consecutive ranks into pretend hosts of this many ranks (tests of "nodes").
    ranks_per_host: int = 0
    #: Microseconds the comm thread keeps polling after activity before it sleeps.
    spin_us: float = 2000.0
    #: Longest sleep of an idle comm thread, in microseconds.
    max_sleep_us: float = 1000.0
    #: Threads that wait on the loop (get/wait, idle executor threads) run its turns themselves.
    inline_progress: bool = True
    #: Tasks a worker rank may hold queued beyond those it is running, at least (more for a rank
    #: that finishes tasks quickly: scheduler.RankState.depth).
    prefetch: int = 2
    #: Values up to this many bytes travel inline; larger ones stay on the rank that made them.
    inline_max: int = 100 * 1024
    #: Idle receive buffers a rank keeps for reuse, in bytes.
    pool_bytes: int = 1 << 30
    #: Bytes of node-shared arena per rank (None: 2 GiB, or less to fit /dev/shm; 0: no arena).
    arena_bytes: Optional[int] = None
    #: Threads that copy one large value into the arena together (None: the CPUs this process
    #: may run on, at most COPY_THREADS_MAX; 1: one thread).
    copy_threads: Optional[int] = None
    #: How a rank reads a large object made on another host: "auto" (Rget from a world window
    #: where the MPI allows it, else messages) or "p2p" (messages); see arena.create_arena.
    remote_fetch: str = "auto"
    #: Seconds init() waits for every rank to reach init().
    init_timeout_s: float = 120.0
    #: Seconds the driver waits for the ranks to leave before aborting the job.
    exit_timeout_s: float = 5.0
    #: Where the job survives dead ranks (ULFM): start a new process for each dead worker rank,
    #: which joins the job under the dead rank's number (replacement.py); 0: go on without them.
    replace_dead_ranks: bool = True
    #: Seconds between two status tables on the driver's stderr (None: only on SIGUSR1).
    status_s: Optional[float] = None
    #: Where the driver writes the job's timeline (a Chrome trace) at its end, or None.
    timeline_path: Optional[str] = None
    #: Events each rank keeps for the timeline, its newest; 0 turns recording off (the driver's
    #: setting holds for the whole session: worker ranks are told with WELCOME).
    timeline_events: int = TIMELINE_MAX_EVENTS
    #: A folder for one log file per rank (its hpcray log and its tasks' output), or None.
    log_dir: Optional[str] = None
    #: Python logging level name for hpcray's logger.
    log_level: str = "WARNING"

    @classmethod
    def from_env(cls) -> "Config":
        mpi = _env_choice("HPCRAY_MPI", ("auto", "0", "1"), "auto")
        raw_resources = os.environ.get("HPCRAY_RESOURCES", "")
        resources: Dict[str, float] = {}
        if raw_resources:
            try:
                resources = json.loads(raw_resources)
            except json.JSONDecodeError as exc:
                raise ValueError(f"HPCRAY_RESOURCES={raw_resources!r} is not JSON: {exc}") from None
            if not isinstance(resources, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and v >= 0 for k, v in resources.items()
            ):
                raise ValueError(f"HPCRAY_RESOURCES={raw_resources!r} must map names to amounts >= 0")
            if {"CPU", "GPU"} & set(resources):
                raise ValueError("HPCRAY_RESOURCES must not contain CPU or GPU; use HPCRAY_NUM_CPUS/HPCRAY_NUM_GPUS")
        remote_fetch = _env_choice("HPCRAY_REMOTE_FETCH", ("auto", "p2p"), "auto")
        arena = os.environ.get("HPCRAY_ARENA_BYTES", "")
        spawn_workers = os.environ.get("HPCRAY_SPAWN_WORKERS", "")
        timeline_path = os.environ.get("HPCRAY_TIMELINE") or None
        timeline_events = _env_int("HPCRAY_TIMELINE_EVENTS", TIMELINE_MAX_EVENTS)
        if timeline_path and not timeline_events:
            raise ValueError(f"HPCRAY_TIMELINE={timeline_path!r} asks for the job's timeline, but "
                             "HPCRAY_TIMELINE_EVENTS=0 turns recording off: unset one of them")
        return cls(
            mpi=mpi,
            spawn=_env_choice("HPCRAY_SPAWN", ("auto", "0", "1"), "auto"),
            spawn_workers=_env_int("HPCRAY_SPAWN_WORKERS", 1, minimum=1) if spawn_workers else None,
            cpus_per_rank=_env_optional_float("HPCRAY_NUM_CPUS"),
            gpus_per_rank=_env_optional_float("HPCRAY_NUM_GPUS"),
            gpus_bound=_env_choice("HPCRAY_GPUS_PER_TASK_BOUND", ("0", "1"), "0") == "1",
            resources_per_rank={k: float(v) for k, v in resources.items()},
            ranks_per_host=_env_int("HPCRAY_RANKS_PER_HOST", 0),
            spin_us=_env_float("HPCRAY_SPIN_US", 2000.0),
            max_sleep_us=_env_float("HPCRAY_MAX_SLEEP_US", 1000.0, minimum=1.0),
            inline_progress=_env_choice("HPCRAY_INLINE_PROGRESS", ("1", "0"), "1") == "1",
            prefetch=_env_int("HPCRAY_PREFETCH", 2),
            inline_max=_env_int("HPCRAY_INLINE_MAX", 100 * 1024),
            pool_bytes=_env_int("HPCRAY_POOL_BYTES", 1 << 30),
            arena_bytes=_env_int("HPCRAY_ARENA_BYTES", 0) if arena else None,
            copy_threads=(_env_int("HPCRAY_COPY_THREADS", 1, minimum=1)
                          if os.environ.get("HPCRAY_COPY_THREADS") else None),
            remote_fetch=remote_fetch,
            init_timeout_s=_env_float("HPCRAY_INIT_TIMEOUT_S", 120.0),
            exit_timeout_s=_env_float("HPCRAY_EXIT_TIMEOUT_S", 5.0),
            replace_dead_ranks=_env_choice("HPCRAY_REPLACE_DEAD_RANKS", ("1", "0"), "1") == "1",
            status_s=_env_optional_float("HPCRAY_STATUS_S") or None,
            log_dir=os.environ.get("HPCRAY_LOG_DIR") or None,
            timeline_path=timeline_path,
            timeline_events=timeline_events,
            log_level=os.environ.get("HPCRAY_LOG_LEVEL", "WARNING").upper(),
        )


def ignore_unhandled_errors() -> bool:
    """Ray's RAY_IGNORE_UNHANDLED_ERRORS, honoured under its Ray name too."""
    return os.environ.get("HPCRAY_IGNORE_UNHANDLED_ERRORS", os.environ.get("RAY_IGNORE_UNHANDLED_ERRORS", "0")) == "1"
