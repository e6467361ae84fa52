"""Sessions and the roles of ranks: ``init()``, ``shutdown()`` and the end of the job.

    python app.py                     mpiexec -n N python app.py
    ┌──────────────────────┐          rank 0 ─ init() returns ─ driver + scheduler (comm thread)
    │ rank 0: driver,      │          rank k ─ init() never returns: worker_rank.serve_worker()
    │ scheduler, executor  │                   runs the executor until the driver's process ends
    └──────────────────────┘

The MPI world of a process (transport, worker ranks, GPU assignment) outlives sessions: a driver
may ``shutdown()`` and ``init()`` again; workers are told RESET, then WELCOME with a new job
number. When the driver's process ends (normally, by an exception, or by SIGINT/SIGTERM), an
atexit hook tells every rank EXIT; each acknowledges, finalizes MPI and leaves with status 0, so
``mpiexec`` returns the driver's own status. Ranks that do not answer in time are aborted.
"""

from __future__ import annotations

import atexit
import importlib
import faulthandler
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import context, object_ref, serialization
from .arena import create_arena
from . import protocol as P
from .client import CoreClient
from . import spawn
from .comm import Backoff, CommLoop, MPITransport, duplicate, fault_tolerant, job_communicator
from .claims import ClaimBoard
from .parallel_copy import Copier, default_threads
from .replacement import Replacement
from .config import EXIT_ACK_S, MEMORY_SHARE, REMOTE_LEAVE_S, START_POLL_MAX_S, STATUS_MEMORY_WAIT_S, Config
from .launchers import (launched_by_mpi, launcher_tasks, no_process_manager, slurm_binds_gpus,
                        slurm_cpus_per_task)
from .executor import Executor, host_address
from .interrupts import SHIELD
from .object_plane import ObjectPlane
from .protocol import RankInfo
from . import gpus
from .resources import host_memory_bytes, host_name, usable_cpu_count
from .scheduler import Scheduler, node_id_of
from .setup_hook import pack as setup_hook_pack, run as setup_hook_run
from .status import StatusReporter, rank_report, start_reporter
from .timeline import RECORDER, chrome_trace, write_trace

logger = logging.getLogger("hpcray")

HEAD_RESOURCE = "node:__internal_head__"
_PRIVATE_DIR = os.path.dirname(os.path.abspath(__file__))


class Session:
    """One ``init()`` .. ``shutdown()`` on one rank: its client, loop and (rank 0) scheduler."""

    def __init__(self, role: str, rank: int, job: int, loop: CommLoop, client: CoreClient,
                 config: Config, namespace: Optional[str] = None,
                 job_env: Optional[Dict[str, str]] = None):
        self.role = role  # "driver" or "worker"
        self.rank = rank
        self.job = job
        self.loop = loop
        self.client = client
        self.config = config
        self.namespace = namespace
        self.job_env = job_env or {}
        self.scheduler: Optional[Scheduler] = None
        self.executor: Optional[Executor] = None
        self.status: Optional[StatusReporter] = None  # the driver's (status.py)
        self.node_id = ""
        self.host = ""
        # a call's arguments larger than this travel as an object of the caller's (calls.py);
        # None: one process, where nothing travels
        self.arguments_inline_max = config.inline_max if loop.transport is not None else None

    @property
    def job_id_hex(self) -> str:
        return self.job.to_bytes(4, "big").hex()


def current() -> Optional[Session]:
    return PROCESS.session


# ---------------------------------------------------------------------------------------------
# The MPI world of this process (persists across sessions)
# ---------------------------------------------------------------------------------------------
class World:
    def __init__(self, comm: Any, transport: MPITransport, workers: List[RankInfo], config: Config,
                 arena: Any = None, spawned: Optional[tuple] = None):
        self.comm = comm
        self.spawned = spawned  # (intercommunicator, merged) of workers init() spawned, or None
        self.transport = transport
        self.workers = workers
        self.config = config
        self.arena = arena  # this rank's node-shared SharedArena, or None
        self.claims: Optional[ClaimBoard] = None  # claim cells of queued tasks (claims.py), or None
        self.job = 0
        self.exited = False


class ProcessState:
    """All that this process's runtime holds between calls: the one place for it (no other
    module-level state). ``lock`` serializes ``init()`` and ``shutdown()``."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.session: Optional[Session] = None  # the live session, on any rank
        self.world: Optional[World] = None  # MPI and the arena: made once, kept across sessions
        self.jobs = 0  # sessions this driver started (the job number of the next is one more)
        # (comm, config, its share of init()'s amounts): a worker rank about to serve
        self.worker_start: Optional[tuple] = None
        self.fork_guard = False  # install_fork_guard() ran
        self.launch_logged = False  # how tasks run here (threads, spawned ranks) was logged
        self.rank_log: Optional[Any] = None  # this rank's HPCRAY_LOG_DIR file (open_rank_log)
        self.early_log: Optional[logging.Handler] = None  # what is logged before it is open
        self.timeline_at_exit = False  # HPCRAY_TIMELINE's hook is registered
        self.ending = False  # the driver's process is ending (a SIGTERM came, or the exit hook runs)
        # (GPU ids, model names) the driver saw for the workers it spawned, which do not look
        self.spawned_gpus: Optional[Tuple[List[str], List[str]]] = None

    def forget(self) -> None:
        """In a forked child: nothing of the parent's runtime is ours."""
        self.session = None
        self.world = None
        self.worker_start = None


PROCESS = ProcessState()


def local_rank_info(rank: int, config: Config, num_cpus: Optional[float] = None,
                     num_gpus: Optional[float] = None, resources: Optional[Dict[str, float]] = None,
                     detect_gpus: bool = True) -> RankInfo:
    """What this rank reports in its HELLO. ``detect_gpus=False``: a worker the driver spawned,
    which sees what the driver saw (its host, its environment); the driver fills that in."""
    host = host_name(rank, config.ranks_per_host)
    # what it sees: the driver shares them out (share_gpus)
    gpu_ids, names = gpus.detect() if detect_gpus else ([], [])
    if num_gpus is None:
        num_gpus = config.gpus_per_rank
    if num_cpus is None:
        num_cpus = config.cpus_per_rank
    if num_cpus is None:
        num_cpus = slurm_cpus_per_task()
    totals: Dict[str, float] = {"CPU": float(num_cpus if num_cpus is not None else 1.0)}
    totals.update(config.resources_per_rank)
    totals.update(resources or {})
    return RankInfo(rank, host, os.getpid(), totals, gpu_ids, names, num_gpus)


def worker_share(rank: int, workers: int, num_cpus: Optional[float], num_gpus: Optional[float],
                 resources: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """Worker rank ``rank``'s part of what ``init()`` was given (under ``mpiexec`` every rank
    calls it with the same amounts): they are the job's totals, shared out over the worker ranks
    (whole units as evenly as possible, the first ranks getting the remainder), as the spawned
    workers share them. Amounts not given: None (the rank's own defaults)."""
    combined = dict(resources or {})
    if num_cpus is not None:
        combined["CPU"] = num_cpus
    if num_gpus is not None:
        combined["GPU"] = num_gpus
    mine = spawn.split_resources(combined, max(1, workers))[rank - 1] if combined else {}
    cpus = mine.pop("CPU", 0.0) if num_cpus is not None else None
    gpu_share = mine.pop("GPU", 0.0) if num_gpus is not None else None
    return {"num_cpus": cpus, "num_gpus": gpu_share, "resources": mine if resources is not None else None}


def _finish_resources(info: RankInfo, gpu_ids: List[str], memory: float, head_host: str) -> None:
    info.gpu_ids = gpu_ids
    if gpu_ids:
        info.resources["GPU"] = float(len(gpu_ids))
        model = gpus.accelerator_type(info.gpu_names)
        if model:
            info.resources[f"accelerator_type:{model}"] = 1.0
    if memory > 0:
        info.resources.setdefault("memory", memory)
    info.resources[f"node:{_node_address(info.host)}"] = 1.0
    if info.host == head_host:
        info.resources[HEAD_RESOURCE] = 1.0


def _node_address(host: str) -> str:
    address = host_address()
    return address if host == host_name(0, 0) else host


def share_gpus(config: Config, infos: List[RankInfo]) -> Dict[int, List[str]]:
    """The GPUs each worker rank owns (gpus.share_out), saying how an uneven split went."""
    bound = config.gpus_bound or slurm_binds_gpus()
    owned, notes = gpus.share_out([gpus.RankGPUs(i.rank, i.host, i.gpu_ids, i.gpus_wanted) for i in infos], bound)
    for note in notes:
        logger.warning("hpcray: %s", note)
    return owned


def _connect_mpi(config: Config, num_cpus: Optional[float], num_gpus: Optional[float],
                 resources: Optional[Dict[str, float]]):
    """Return (comm, rank, size, spawned), or None when this process runs alone, its tasks in
    threads. ``spawned``: (intercommunicator, merged communicator) of workers this driver
    started itself (spawn.py), else None."""
    launched = launched_by_mpi()
    if config.mpi == "0":
        _refuse_copies("HPCRAY_MPI=0 makes each copy run alone; unset it, or start one copy")
    if config.mpi == "0" or (not launched and config.spawn == "0" and config.mpi != "1"):
        _log_launch_once("tasks run in threads of this process (HPCRAY_MPI=0 or HPCRAY_SPAWN=0)")
        return None
    if no_process_manager():
        _refuse_copies("srun gave them no process-management interface for MPI (srun --mpi=none, or a "
                       "Slurm whose MpiDefault is none): name one, `srun --mpi=pmi2` for MPICH, "
                       "`srun --mpi=pmix` for Open MPI (`srun --mpi=list` shows this Slurm's)")
    if not launched:
        spawn.single_host_mpi_settings()
    try:
        importlib.import_module("mpi4py.MPI")  # loads the MPI library
    except Exception as exc:  # no MPI library at all: single rank
        if config.mpi == "1" or config.spawn == "1":
            raise RuntimeError(f"HPCRAY_MPI=1 or HPCRAY_SPAWN=1, but mpi4py cannot load an MPI library: "
                               f"{exc}") from exc
        _refuse_copies(f"mpi4py cannot load an MPI library ({exc}); install or load the MPI it was built "
                       "against")
        if launched:
            logger.warning("hpcray: launched by an MPI launcher but mpi4py failed to load (%s); "
                           "running single-rank", exc)
        else:
            _log_launch_once(f"tasks run in threads of this process (no MPI library: {exc})")
        return None
    comm = job_communicator(config.init_timeout_s)
    if comm is not None:
        return comm, comm.Get_rank(), comm.Get_size(), None
    _refuse_copies(f"The MPI library mpi4py loaded ({_mpi_library()}) did not connect to the launcher. "
                   "Under Slurm name the plugin that matches it: `srun --mpi=pmi2` for MPICH, "
                   "`srun --mpi=pmix` for Open MPI (`srun --mpi=list` shows this Slurm's); else start "
                   "the program with the mpiexec of that same MPI")
    if config.spawn == "0":
        _log_launch_once("tasks run in threads of this process (HPCRAY_SPAWN=0)")
        return None
    reason = spawn.blocker()
    if reason is not None:
        if config.spawn == "1":
            raise RuntimeError(f"HPCRAY_SPAWN=1, but worker ranks cannot be spawned: {reason}")
        logger.warning("hpcray: tasks run in threads of this process: %s", reason)
        return None
    count = config.spawn_workers or max(1, int(num_cpus) if num_cpus else usable_cpu_count())
    watch = spawn.SpawnWatch(count, config.init_timeout_s)
    try:
        inter, merged, PROCESS.spawned_gpus = spawn.spawn_workers(count, num_gpus, resources,
                                                                  config.init_timeout_s)
        comm = duplicate(merged, config.init_timeout_s)
    finally:
        watch.stop()
    _log_launch_once(f"{count} worker ranks spawned (MPI_Comm_spawn)")
    return comm, 0, comm.Get_size(), (inter, merged)


def _refuse_copies(fix: str) -> None:
    """A launcher started several copies of this program but this one would run alone: each copy
    would do the whole job by itself (and a batch system report success). An error instead."""
    count, evidence = launcher_tasks()
    if count > 1:
        # this copy's MPI (a singleton, started by another MPI's launcher) may have made shared
        # memory that its finalize leaves behind (Open MPI's sm_segment, 16 MB): the program
        # ends here, so its /dev/shm names go now
        unlink_mapped_shm()
        raise RuntimeError(f"hpcray.init(): the launcher started {count} copies of this program ({evidence}), "
                           f"but this one would run alone, as would each copy: the whole program {count} times "
                           f"over. {fix}.")


def _mpi_library() -> str:
    try:
        from mpi4py import MPI
        return " ".join(MPI.Get_library_version().splitlines()[0].split(",")[0].split())
    except Exception as exc:  # the version is only part of a message
        return f"version unknown: {exc}"


def _log_launch_once(what: str) -> None:
    if not PROCESS.launch_logged:
        PROCESS.launch_logged = True
        logger.info("hpcray: %s", what)


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------
def init_session(num_cpus: Optional[float], num_gpus: Optional[float], resources: Optional[Dict[str, float]],
                 namespace: Optional[str], job_env: Optional[Dict[str, str]],
                 setup_hook: Any = None) -> Optional[Session]:
    """Start a session on the driver; None on a worker rank (then ``serve_worker_rank``).
    ``setup_hook``: runtime_env's worker_process_setup_hook (setup_hook.py), run by every process
    that runs tasks."""
    config = Config.from_env()
    _configure_logging(config)
    install_fork_guard()
    install_crash_reports()
    world = PROCESS.world
    if world is None:
        mpi = _connect_mpi(config, num_cpus, num_gpus, resources)
    else:
        mpi = (world.comm, 0, world.comm.Get_size(), world.spawned)
    if mpi is not None and mpi[1] != 0:
        share = worker_share(mpi[1], mpi[2] - 1, num_cpus, num_gpus, resources)
        PROCESS.worker_start = (mpi[0], config, share)
        return None  # the caller serves (serve_worker_rank), outside the init lock
    open_rank_log(0, config)
    RECORDER.keep(config.timeline_events)
    PROCESS.jobs += 1
    job = PROCESS.jobs
    if namespace is None:  # like Ray: each driver gets an anonymous namespace of its own
        namespace = f"anonymous-{os.getpid()}-{job}"
    if mpi is None:
        session = _start_single(config, job, num_cpus, num_gpus, resources, namespace, job_env)
        session.executor.setup_error = setup_hook_run(setup_hook_pack(setup_hook), 0)
    else:
        session = _start_driver(mpi[0], config, job, namespace, job_env, mpi[3], setup_hook_pack(setup_hook))
    if config.timeline_path and not PROCESS.timeline_at_exit:
        PROCESS.timeline_at_exit = True
        # registered after _start_driver's _at_exit, so it runs before it (atexit is LIFO), while
        # the ranks are there to send their events
        atexit.register(_write_timeline_at_exit)
    return session


def open_session(session: Session, plane: ObjectPlane) -> None:
    """Make ``session`` this process's live session, on any rank (the one place that wires one):
    its client reads values through the rank's object plane, the loop tells it of dropped refs,
    of its own failure and of stubs someone now wants, and ObjectRefs count themselves on its
    loop."""
    loop, client = session.loop, session.client
    client.plane = plane
    loop.on_forget = client.forget
    loop.on_failure = client.fail_all
    loop.on_fetch_local = client.fetch_stubs
    PROCESS.session = session
    object_ref.current.sink = loop.commands.append
    object_ref.current.client = client


def close_session(session: Session) -> None:
    """This process's live session is over (``shutdown()``, or RESET on a worker rank)."""
    if PROCESS.session is session:
        PROCESS.session = None
        object_ref.current.sink = None
        object_ref.current.client = None
    session.client.completions.close()
    if session.status is not None:
        session.status.stop()
    RECORDER.clear()  # a session's timeline is its own (on every rank: shutdown, RESET)


def serve_worker_rank() -> None:
    """A worker rank's init(): serve the driver's sessions until its process ends; never returns."""
    from .worker_rank import serve_worker
    comm, config, share = PROCESS.worker_start
    PROCESS.worker_start = None
    serve_worker(comm, config, **share)


def open_rank_log(rank: int, config: Config) -> None:
    """``HPCRAY_LOG_DIR``: this rank's file there, ``rank<R>-pid<P>.log``, gets the hpcray log
    of this process and a copy of every line its tasks print (prefixed as on the terminal)."""
    if not config.log_dir or PROCESS.rank_log is not None:
        return
    try:
        os.makedirs(config.log_dir, exist_ok=True)
        stream = open(os.path.join(config.log_dir, f"rank{rank}-pid{os.getpid()}.log"), "a", buffering=1)
    except OSError as exc:
        raise ValueError(f"HPCRAY_LOG_DIR={config.log_dir!r}: cannot write a log file there: {exc}") from None
    PROCESS.rank_log = stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(message)s"))
    early = PROCESS.early_log
    if early is not None:  # what was logged before this rank knew its number
        PROCESS.early_log = None
        logger.removeHandler(early)
        early.setTarget(handler)
        early.close()  # (flushes into the file)
    logger.addHandler(handler)
    context.copy_task_output_to(stream)


def _configure_logging(config: Config) -> None:
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    if config.log_dir and PROCESS.rank_log is None and PROCESS.early_log is None:
        # kept for this rank's HPCRAY_LOG_DIR file, which open_rank_log opens once the rank is known
        PROCESS.early_log = logging.handlers.MemoryHandler(10_000, flushLevel=logging.CRITICAL + 1)
        logger.addHandler(PROCESS.early_log)
    logger.setLevel(getattr(logging, config.log_level, logging.WARNING))


def _start_single(config: Config, job: int, num_cpus, num_gpus, resources, namespace, job_env) -> Session:
    if num_cpus is None:
        num_cpus = config.cpus_per_rank if config.cpus_per_rank is not None else usable_cpu_count()
    info = local_rank_info(0, config, num_cpus, num_gpus, resources)
    _finish_resources(info, share_gpus(config, [info])[0], host_memory_bytes() * MEMORY_SHARE, info.host)
    loop = CommLoop(0, None, config.spin_us, config.max_sleep_us, config.inline_progress)
    loop.refs.job = job
    client = CoreClient(0, job, loop)
    session = Session("driver", 0, job, loop, client, config, namespace, job_env)
    end_job_on_loop_failure(loop, None, info.host, lambda: session.executor)
    session.scheduler = Scheduler(loop.send, [info], config.prefetch, job)
    session.executor = Executor(0, info.resources, info.gpu_ids, loop)
    session.host, session.node_id = info.host, node_id_of(info.host)
    _wire(loop, session)
    context.install_task_io()
    _install_driver_signals()
    loop.start()
    return session


def _start_driver(comm: Any, config: Config, job: int, namespace, job_env, spawned=None,
                  setup_hook: Any = None) -> Session:
    if PROCESS.world is None:
        transport = MPITransport(comm)
        arena = start_arena(comm, config)
        claims = open_claims(comm)
        workers = _gather_workers(transport, config)
        if shm_names_can_go_at_start(spawned is not None):
            # Every rank has mapped the job's shared memory (each sent HELLO once its arena was
            # made): the names can go now, so a job that ends by SIGKILL (MPICH's launcher does
            # that to spawned workers when a driver is killed; Slurm after KillWait) leaves none.
            unlink_mapped_shm()
        PROCESS.world = World(comm, transport, workers, config, arena, spawned)
        PROCESS.world.claims = claims
        if spawned is not None:
            spawn.watch_workers(PROCESS.world, _describe_ranks)
        atexit.register(_at_exit)
        _install_driver_signals()
        _install_interrupt_exit()
    world = PROCESS.world
    world.job = job
    head_host = host_name(0, config.ranks_per_host)
    loop = CommLoop(0, world.transport, config.spin_us, config.max_sleep_us, config.inline_progress)
    end_job_on_loop_failure(loop, world.comm, head_host, lambda: None)  # (the driver runs no tasks)
    loop.refs.job = job
    client = CoreClient(0, job, loop)
    session = Session("driver", 0, job, loop, client, config, namespace, job_env)
    live = [info for info in world.workers if info.rank not in world.transport.dead]
    session.scheduler = Scheduler(loop.send, live, config.prefetch, job)
    session.scheduler.keeps_lineage = fault_tolerant()  # lost values can be made again
    session.scheduler.claims = world.claims
    if world.claims is not None:
        world.claims.reset()
    session.host, session.node_id = head_host, node_id_of(head_host)
    _wire(loop, session)

    def welcome(info: RankInfo) -> None:
        loop.send(info.rank, (P.WELCOME, job, info.gpu_ids, info.resources, session.namespace, setup_hook,
                              config.timeline_events))
    for info in live:
        welcome(info)
    # (its RankInfo is the dead rank's, in world.workers too, with the new process's pid and host)
    session.scheduler.on_rank_back = welcome
    loop.on_ranks_dead = Replacement(loop, config.replace_dead_ranks and fault_tolerant()).on_dead
    loop.start()
    return session


def start_arena(comm: Any, config: Config):
    """Every rank, once per job, collectively: the node-shared object arena (arena.py). A job
    that survives dead ranks uses no MPI window: it fetches across hosts point-to-point (a
    one-sided read of a dead rank's memory has no defined outcome, a message to it fails
    cleanly), and its host segments are files (a window with a dead member hung MPI_Finalize)."""
    tolerant = fault_tolerant()
    remote_fetch = "p2p" if tolerant else config.remote_fetch
    arena = create_arena(comm, config.ranks_per_host, config.arena_bytes, remote_fetch, windows=not tolerant)
    if arena is not None:
        arena.copier = Copier(config.copy_threads or default_threads())
    serialization.use_arena(arena, config.inline_max)
    return arena


def open_claims(comm: Any) -> Optional[ClaimBoard]:
    """Every rank, once per job, collectively, after ``start_arena``: the claim cells of queued
    tasks (claims.py). None in a job that survives dead ranks (no MPI window there)."""
    return None if fault_tolerant() else ClaimBoard.open(comm)


def _wire(loop: CommLoop, session: Session) -> None:
    plane = ObjectPlane(session.rank, loop.send, session.config.inline_max, loop.transport,
                        session.config.pool_bytes)
    plane.arena = PROCESS.world.arena if PROCESS.world is not None else None
    loop.plane = plane
    if session.executor is not None:
        session.executor.plane = plane
    loop.scheduler = session.scheduler
    open_session(session, plane)
    scheduler = session.scheduler
    if scheduler is not None:
        host = host_name(0, session.config.ranks_per_host)
        scheduler.local_report = lambda what: rank_report(what, host, plane)
        scheduler.driver_node_id = session.node_id

        def status_view() -> Dict[str, Any]:
            view = loop.call(scheduler.status_view, timeout=10)
            try:  # each rank's object memory, asked of the ranks (one that does not answer: "?")
                view["memory"] = session.client.query("memory", timeout=STATUS_MEMORY_WAIT_S)
            except Exception:
                view["memory"] = {}
            view["waits"] = session.client.wait_progress()
            return view
        session.status = start_reporter(status_view, session.config.status_s)
    executor = session.executor

    def agent(msg: tuple) -> None:
        kind = msg[0]
        if kind == P.OBJECT:
            session.client.deliver(msg[1], msg[2])
        elif kind == P.STREAM_PUSH:
            session.client.on_stream_push(msg[1], msg[2], msg[3])
        elif kind == P.STREAM_END:
            session.client.on_stream_end(msg[1], msg[2])
        elif executor is not None:
            executor.handle(msg)
        elif msg[0] == P.FREE:  # a large value the driver put, kept here for other ranks
            plane.on_free(msg[1])

    loop.agent = agent
    if executor is not None:
        loop.local_hook = executor.on_local


def _gather_workers(transport: MPITransport, config: Config) -> List[RankInfo]:
    """Wait (polling, never blocking in MPI) for every worker's HELLO; assign GPUs and memory."""
    expected = transport.size - 1
    infos: Dict[int, RankInfo] = {}
    deadline = time.monotonic() + config.init_timeout_s
    backoff = Backoff(max_s=START_POLL_MAX_S)
    while len(infos) < expected:
        got = transport.receive()
        for source, batch in got:
            for msg in batch:
                if msg[0] == P.HELLO:
                    infos[source] = msg[1]
        if not got:
            if time.monotonic() > deadline:
                missing = sorted(set(range(1, transport.size)) - set(infos))
                raise RuntimeError(f"hpcray.init(): ranks {missing} did not call hpcray.init() in time; "
                                   "every rank must reach init() (call it near the top of the program)")
            backoff.sleep()
    workers = [infos[r] for r in sorted(infos)]
    if PROCESS.spawned_gpus is not None:
        for info in workers:
            info.gpu_ids, info.gpu_names = list(PROCESS.spawned_gpus[0]), list(PROCESS.spawned_gpus[1])
    owned = share_gpus(config, workers)
    head_host = host_name(0, config.ranks_per_host)
    per_host: Dict[str, int] = {}
    for info in workers:
        per_host[info.host] = per_host.get(info.host, 0) + 1
    for info in workers:
        _finish_resources(info, owned[info.rank], host_memory_bytes() * MEMORY_SHARE / per_host[info.host],
                          head_host)
    return workers


def shutdown_session(deadline: Optional[float] = None) -> List[int]:
    """End the session on the driver; worker ranks forget it and wait for the next one. Returns
    the ranks that did not confirm by ``deadline`` (default: ``HPCRAY_EXIT_TIMEOUT_S`` from now)."""
    with PROCESS.lock:
        session = PROCESS.session
        if session is None:
            return []
        close_session(session)
        loop = session.loop
        silent: List[int] = []
        world = PROCESS.world
        if world is not None and not world.exited:
            if deadline is None:
                deadline = time.monotonic() + session.config.exit_timeout_s
            silent = _reset_workers(loop, deadline)
        loop.stop()
        if session.scheduler is not None:
            session.scheduler.gc.release()
        if world is None:
            context.uninstall_task_io()
        return silent


def _reset_workers(loop: CommLoop, deadline: float) -> List[int]:
    acks: set = set()
    workers = {info.rank for info in PROCESS.world.workers} - PROCESS.world.transport.dead

    def collect(source: int, msg: tuple) -> None:
        if msg[0] == P.RESET_ACK:
            acks.add(source)

    def begin() -> None:
        loop.scheduler = None
        loop.on_remote = collect
        for rank in workers:
            loop.send(rank, (P.RESET,))

    try:
        loop.call(begin, max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        return sorted(workers)
    backoff = Backoff()
    dead = PROCESS.world.transport.dead  # (grows if a rank dies meanwhile: not waited for)
    while not workers <= acks | dead and time.monotonic() < deadline and loop.running:
        backoff.sleep()
    silent = sorted(workers - acks - dead)
    if silent:
        logger.warning("hpcray: %s did not confirm the end of the session", _describe_ranks(silent))
    return silent


def _describe_ranks(ranks: List[int]) -> str:
    """"rank 1 (pid 123 on node7; it held tasks f x2), rank 2 (...)": for messages about ranks
    that died or do not answer."""
    infos = {info.rank: info for info in (PROCESS.world.workers if PROCESS.world is not None else [])}
    session = PROCESS.session
    scheduler = session.scheduler if session is not None else None
    parts = []
    for r in ranks:
        where = [f"pid {infos[r].pid} on {infos[r].host}"] if r in infos else []
        work = scheduler.work_on_rank(r) if scheduler is not None else ""
        if work:
            where.append(f"it held {work}")
        parts.append(f"rank {r} ({'; '.join(where)})" if where else f"rank {r}")
    return ", ".join(parts)


def _write_timeline_at_exit() -> None:
    """``HPCRAY_TIMELINE=path``: the driver writes the job's timeline as its process ends, an
    error's end too, while the ranks are still there to send their events."""
    session = PROCESS.session
    if session is None or session.scheduler is None or not session.config.timeline_path:
        return
    path = session.config.timeline_path
    try:
        trace = chrome_trace(session.client.query("timeline", timeout=session.config.exit_timeout_s))
        write_trace(path, trace)
    except Exception as exc:  # the program is ending: say why there is no trace, end all the same
        sys.stderr.write(f"hpcray: HPCRAY_TIMELINE={path}: no timeline written: {type(exc).__name__}: {exc}\n")


def _at_exit() -> None:
    """The driver's process is ending: end every rank, then let MPI finalize. Ranks that do not
    answer within ``HPCRAY_EXIT_TIMEOUT_S`` (stopped, or stuck in C code holding the GIL) are named
    and the job is aborted: nothing here waits on a rank that may never answer."""
    PROCESS.ending = True
    world = PROCESS.world
    if world is None or world.exited:
        return
    deadline = time.monotonic() + world.config.exit_timeout_s
    silent = set(shutdown_session(deadline))
    world.exited = True
    transport = world.transport
    waiting = {info.rank for info in world.workers} - silent - transport.dead
    for rank in waiting:
        transport.send(rank, [(P.EXIT, bool(transport.deaths))])
    deadline = max(deadline, time.monotonic() + EXIT_ACK_S)  # (ranks that answered the reset answer at once)
    backoff = Backoff()
    while waiting and time.monotonic() < deadline:
        waiting -= transport.dead
        got = transport.receive()
        for source, batch in got:
            if any(msg[0] == P.EXIT_ACK for msg in batch):
                waiting.discard(source)
        transport.progress_sends()
        if not got:
            backoff.sleep()
    silent |= waiting
    while transport.busy() and time.monotonic() < deadline:
        transport.progress_sends()
        backoff.sleep()
    if not silent and transport.deaths:
        survivors = [info for info in world.workers if info.rank not in transport.dead]
        # (the driver's own exit status is Python's to set after this hook; a finalize that hangs
        # ends it with 1, said on stderr)
        finalize_after_failure(list(transport.comms.values()), world.config.exit_timeout_s, status=1)
        _wait_until_gone(survivors, time.monotonic() + world.config.exit_timeout_s)
        return
    if not silent:
        # Every rank is alive and still makes MPI progress while it leaves: the job-long RMA
        # epoch can end (MPICH's Unlock_all waits for the targets), then MPI_Finalize, which
        # waits for every rank (MPICH); after it the ranks only have to exit.
        from mpi4py import MPI
        if world.arena is not None:
            world.arena.close(world.comm, busy=False)
        if world.claims is not None:
            world.claims.close()
        if not MPI.Is_finalized():
            world.comm.Free()
            disconnect(world.spawned)
            MPI.Finalize()
        _wait_until_gone(world.workers, time.monotonic() + world.config.exit_timeout_s)
        return
    sys.stderr.write(f"hpcray: {_describe_ranks(sorted(silent))} did not answer within "
                     f"HPCRAY_EXIT_TIMEOUT_S={world.config.exit_timeout_s:g} s as the driver ended "
                     "(stopped, or stuck in a call that holds the GIL); aborting the job\n")
    sys.stderr.flush()
    abort_job(world.comm, 1)


#: exit status of a job whose rank's loop failed (a bug in hpcray): EX_SOFTWARE
LOOP_FAILURE_EXIT = 70


def end_job_on_loop_failure(loop: CommLoop, comm: Any, host: str, executor: Callable[[], Any]) -> None:
    """A rank whose loop failed ends the whole job at once, its traceback already logged (with
    its pid, host and what its executor ran: ``executor()`` gives it, or None): under MPI by
    MPI_Abort (the launcher ends every rank), single rank by ending the process."""
    def describe() -> str:
        running = executor()
        held = running.held() if running is not None else ""
        return f"pid {os.getpid()} on {host}" + (f"; it held {held}" if held else "")
    loop.describe = describe

    def fatal(exc: BaseException) -> None:
        sys.__stderr__.flush()
        if comm is not None:
            abort_job(comm, LOOP_FAILURE_EXIT)
        os._exit(LOOP_FAILURE_EXIT)
    loop.on_fatal = fatal


def finalize_after_failure(revoked: List[Any], timeout_s: float, status: int) -> None:
    """MPI_Finalize in a job where ranks died (ULFM), on every survivor once the driver heard from
    all of them. Freeing a communicator with a dead member can hang (measured): the driver
    revokes and frees the job's communicators (``revoked``: one more per replacement of dead
    ranks); the others pass none (a revoke could drop their last messages to the driver). The arena's windows are left to MPI_Finalize
    (freeing a window is collective with the dead). MPI_Finalize itself hung now and then (7 of 247
    jobs on a loaded machine, every survivor inside it, before ``finalize_releasing_gil`` skipped
    its fence): one that does not return in ``timeout_s`` ends the process with ``status``, saying
    so."""
    from mpi4py import MPI
    if MPI.Is_finalized():
        return

    def give_up() -> None:
        sys.stderr.write(f"hpcray: MPI_Finalize did not return within HPCRAY_EXIT_TIMEOUT_S={timeout_s:g} s "
                         f"after a rank died; this process ends with status {status}\n")
        sys.stderr.flush()
        os._exit(status)
    watchdog = threading.Timer(timeout_s, give_up)
    watchdog.daemon = True
    watchdog.start()
    for comm in revoked:
        try:
            comm.Revoke()
            comm.Free()
        except MPI.Exception:
            pass
    finalize_releasing_gil(skip_fence=True)
    watchdog.cancel()


def finalize_releasing_gil(skip_fence: bool = False) -> None:
    """MPI_Finalize through ctypes, which lets the other threads (a watchdog) run meanwhile:
    mpi4py's ``MPI.Finalize`` holds the GIL for the whole call (measured with Open MPI: a thread
    ticking every 0.2 s ticked once in a 3 s finalize; through ctypes, 15 times).

    ``skip_fence`` (Open MPI): no launcher-wide fence at the start of MPI_Finalize. After a rank
    died, that fence now and then waits for the dead process for ever (measured: 7 of 247 jobs on
    a loaded machine; with processes that exited without finalizing, 2 of 6). Open MPI's own
    switch for it is the library variable ``ompi_async_mpi_finalize``; the fence only makes sure
    no message is in flight, which the exit handshake (EXIT, EXIT_ACK) already did."""
    import ctypes
    from mpi4py import MPI
    try:
        library = ctypes.CDLL(MPI.__file__)
        finalize = library.MPI_Finalize
    except (OSError, AttributeError):  # (an mpi4py without the MPI library's symbols in reach)
        MPI.Finalize()
        return
    if skip_fence:
        try:
            ctypes.c_bool.in_dll(library, "ompi_async_mpi_finalize").value = True
        except ValueError:  # (not Open MPI)
            pass
    finalize()


def abort_job(comm: Any, code: int) -> None:
    """End the whole MPI job now. MPI_Abort leaves the job's shared-memory files in /dev/shm
    (MPI_Finalize would have removed them): this process maps all of them, so it unlinks what
    it maps there first (the mappings stay valid until the processes end)."""
    unlink_mapped_shm()
    comm.Abort(code)


def disconnect(spawned: Optional[tuple]) -> None:
    """Before MPI_Finalize, on the driver and on each worker it spawned (collective): the spawned
    processes are connected to the driver until both sides disconnect."""
    if spawned is not None:
        inter, merged = spawned
        merged.Free()
        inter.Disconnect()


def shm_names_can_go_at_start(spawned: bool) -> bool:
    """Whether a rank may remove the /dev/shm names it maps once every rank has joined: with
    MPICH, whose processes attach to a node's segments in MPI_Init (and the arena's window at its
    allocation, before HELLO), and with workers the driver spawned. Open MPI's shared-memory
    transport maps a peer's segment on first contact, so under its mpiexec they stay."""
    if spawned:
        return True
    from mpi4py import MPI
    return MPI.get_vendor()[0] == "MPICH"


def unlink_mapped_shm() -> None:
    """Remove the /dev/shm files this process maps (the job's shared memory), as MPI_Finalize
    would have; the mappings stay valid until the process ends."""
    for path in mapped_shm_paths("self"):
        try:
            os.unlink(path)
        except OSError:
            pass


def mapped_shm_paths(pid: Any) -> set:
    """The /dev/shm files process ``pid`` ("self": this one) maps and has not removed."""
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return {line.split(None, 5)[5].strip() for line in maps
                    if "/dev/shm/" in line and not line.rstrip().endswith("(deleted)")}
    except (OSError, IndexError):
        return set()


def _wait_until_gone(workers: List[RankInfo], deadline: float) -> None:
    """Let acknowledged ranks finish leaving before the driver's process ends.

    If the driver exits with a non-zero status while a rank is still on its way out, the MPI
    launcher kills that rank and may report its signal instead of the driver's status. Ranks on
    this host are watched through /proc; for ranks on other hosts a short grace period is given.
    """
    here = socket.gethostname()
    local = [w.pid for w in workers if w.host == here or w.host.startswith(here + "-")]
    remote = len(local) < len(workers)
    backoff = Backoff()
    while local and time.monotonic() < deadline:
        local = [pid for pid in local if spawn.process_alive(pid)]
        if local:
            backoff.sleep()
    if remote:
        time.sleep(REMOTE_LEAVE_S)


def install_fork_guard() -> None:
    """A process forked from a rank (``multiprocessing`` with fork, in a task) is not a rank: it
    gets the default signal handlers back (the rank's would keep a pool's worker from ending on
    SIGTERM, and its pool from ever joining) and never touches the parent's runtime or MPI.

    The forking thread blocks SIGTERM and SIGINT around the fork: a signal that reaches the child
    before its handlers are reset stays pending (the interpreter drops any it caught in that
    window) and is delivered, with the default action, once the child unblocks it."""
    if PROCESS.fork_guard or not hasattr(os, "register_at_fork"):
        return
    PROCESS.fork_guard = True
    guarded = {signal.SIGTERM, signal.SIGINT}
    masks = threading.local()

    def before() -> None:
        masks.previous = signal.pthread_sigmask(signal.SIG_BLOCK, guarded)

    def in_parent() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, masks.previous)

    def in_child() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, masks.previous)
        PROCESS.forget()
        context.set_current(None)  # (the forking thread may be running a task)
        object_ref.current.sink = None
        object_ref.current.client = None
    os.register_at_fork(before=before, after_in_parent=in_parent, after_in_child=in_child)


#: where this process writes its crash reports: stderr, or the file a spawning driver reads
#: (spawn.CrashReports; ``report_crashes_to``)
_crash_stream: Optional[Any] = None


def report_crashes_to(stream: Optional[Any]) -> None:
    """A spawned worker: crash reports go to ``stream`` (the driver's file), not the terminal."""
    global _crash_stream
    if stream is not None:
        _crash_stream = stream
        faulthandler.enable(file=stream, all_threads=True)


def install_crash_reports() -> None:
    """Every rank: a crash in C code (a segfault) dumps the Python stack of every thread
    (faulthandler), and ``os._exit`` called by a task says which task called it, with its stack,
    before the process goes (the MPI launcher then ends the job)."""
    if not faulthandler.is_enabled() and sys.__stderr__ is not None:
        try:
            faulthandler.enable(file=sys.__stderr__, all_threads=True)
        except (RuntimeError, ValueError, OSError):  # a stderr without a file descriptor (some notebooks)
            pass
    if getattr(os._exit, "__hpcray__", False):
        return
    real_exit = os._exit
    pid = os.getpid()

    def _exit(code: int) -> None:
        task = context.current()
        if task is not None and os.getpid() == pid:
            # a task that ends its rank's process is a crash (Ray: WorkerCrashedError), whatever
            # status it asks for: a driver running tasks in threads must not end looking successful
            status = code if code else 1
            # where the job survives dead ranks, the launcher ends every rank when one exits
            # with a non-zero status, but not when one is killed: the rank dies by SIGKILL
            killed = task.rank != 0 and fault_tolerant()
            ending = ("the rank ends (SIGKILL: the job goes on without it)" if killed
                      else f"the process ends with status {status}")
            if not killed and task.rank != 0:
                ending += (" and the MPI job with it (to survive a dead rank, run under Open MPI "
                           "with `mpiexec --with-ft ulfm`)")
            stream = _crash_stream or sys.__stderr__
            if stream is not None:
                frames = [f for f in traceback.extract_stack(sys._getframe(1))
                          if not f.filename.startswith((_PRIVATE_DIR, threading.__file__))]
                stack = "".join(traceback.format_list(frames))
                stream.write(f"hpcray: the task {task.name} (task {task.task_id.hex()}) on rank "
                             f"{task.rank} (pid {pid}) called os._exit({code}); {ending}; the "
                             f"task's stack:\n{stack}")
                stream.flush()
            if killed:
                os.kill(pid, signal.SIGKILL)
            code = status
        real_exit(code)
    _exit.__hpcray__ = True
    os._exit = _exit


def _install_driver_signals() -> None:
    """SIGTERM ends the driver like an exception would, so the atexit hook ends every rank.

    Ctrl-C (SIGINT) raises KeyboardInterrupt as Python's own handler does, except while the main
    thread is inside a runtime call: then it is raised where that call has nothing half done
    (interrupts.py)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        def on_term(signum, frame):
            # Only the first ends the program: Slurm sends more than one (at a time limit the
            # step's SIGTERM, then srun's own), and one raised inside the exit hook would tear it
            # in two (seen: a traceback from the arena's close). SIGKILL after KillWait still ends
            # an exit that takes too long.
            if PROCESS.ending:
                return
            PROCESS.ending = True
            raise SystemExit(128 + signum)
        signal.signal(signal.SIGTERM, on_term)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        def on_interrupt(signum, frame):
            if not SHIELD.defer():  # (handlers run on the main thread)
                raise KeyboardInterrupt
        signal.signal(signal.SIGINT, on_interrupt)


def _install_interrupt_exit() -> None:
    """An uncaught KeyboardInterrupt (Ctrl-C) ends an MPI driver with status 130.

    Python would end the process by re-raising SIGINT on itself after the exit handlers; the MPI
    launcher then tears the job down while the ranks are still leaving (seen: a rank reported as
    crashed). Instead the driver runs the exit handlers (the ranks leave cleanly), finalizes MPI
    and exits 130, as a shell reports Ctrl-C.
    """
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        if issubclass(kind, KeyboardInterrupt):
            sys.stdout.flush()
            sys.stderr.flush()
            atexit._run_exitfuncs()
            try:
                from mpi4py import MPI
                if not MPI.Is_finalized():
                    MPI.Finalize()
            finally:
                os._exit(130)
    sys.excepthook = hook
