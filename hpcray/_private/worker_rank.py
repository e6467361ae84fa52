"""Worker ranks (rank >= 1 under MPI): serve the driver's sessions until its process ends.

    init() on rank k ─► serve_worker: HELLO ─► comm loop ─► WELCOME (job, GPUs, resources) ─►
    EXECUTE / ACTOR_CALL / OBJECT / FREE ... ─► RESET (session over) ─► WELCOME ... ─► EXIT
    ─► MPI_Finalize ─► the C library's exit(): never returns into the user's program.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

from . import context, replacement, runtime
from . import protocol as P
from .client import CoreClient
from .comm import Backoff, CommLoop, MPITransport
from .config import SETTLE_S, TERM_GRACE_S, Config
from .executor import Executor
from .object_plane import ObjectPlane
from .resources import host_name, node_id_of
from .setup_hook import run as run_setup_hook
from .status import rank_report
from .timeline import RECORDER


class WorkerAgent:
    """Downstream handler of a worker rank: sessions, tasks, objects, the end of the job."""

    def __init__(self, rank: int, loop: CommLoop, config: Config, arena: Any = None,
                 spawned: bool = False):
        self.rank = rank
        self.loop = loop
        self.config = config
        # the job's /dev/shm names go once every rank has mapped them (the first WELCOME): a
        # launcher may SIGKILL this rank when the driver dies, before any cleanup
        self.unlink_shm = runtime.shm_names_can_go_at_start(spawned)
        self.executor: Optional[Executor] = None
        self.plane = ObjectPlane(rank, loop.send, config.inline_max, loop.transport, config.pool_bytes)
        self.plane.arena = arena
        loop.plane = self.plane
        self.ranks_died = False  # some rank of the job died (ULFM): the end takes another path
        self.claims = None  # the job's ClaimBoard (claims.py), or None
        loop.on_ranks_dead = self.on_ranks_dead

    def on_ranks_dead(self, ranks: List[int]) -> None:
        """Ranks died (ULFM). Without the driver the job is over: this rank ends at once."""
        self.ranks_died = True
        if 0 in ranks:
            sys.stderr.write(f"hpcray: rank {self.rank}: the driver (rank 0) died; this rank ends\n")
            sys.stderr.flush()
            os._exit(1)

    def handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == P.OBJECT or kind == P.STREAM_PUSH or kind == P.STREAM_END:
            session = runtime.current()
            if session is None:
                return
            if kind == P.OBJECT:
                session.client.deliver(msg[1], msg[2])
            elif kind == P.STREAM_PUSH:
                session.client.on_stream_push(msg[1], msg[2], msg[3])
            else:
                session.client.on_stream_end(msg[1], msg[2])
        elif kind == P.RANK_REPORT_REQ:
            host = host_name(self.rank, self.config.ranks_per_host)
            self.loop.send(0, (P.RANK_REPORT, msg[1], rank_report(msg[2], host, self.plane)))
        elif kind == P.WELCOME:
            self._welcome(*msg[1:])
        elif kind == P.RESET:
            self._reset()
            self.loop.send(0, (P.RESET_ACK,))
        elif kind == P.REPLACE:
            self.loop.defer(lambda: replacement.join(self.loop, self.plane, msg[1]))
        elif kind == P.EXIT:
            self.ranks_died = self.ranks_died or msg[1]  # (the driver knew of dead ranks)
            self._reset()
            self.loop.send(0, (P.EXIT_ACK,))
            self.loop.running = False
        elif self.executor is not None:
            self.executor.handle(msg)

    def _welcome(self, job: int, gpu_ids: List[str], resources: Dict[str, float], namespace: str,
                 setup_hook: Any, timeline_events: int) -> None:
        RECORDER.keep(timeline_events)  # the driver's setting holds for the session
        if self.unlink_shm:
            self.unlink_shm = False
            runtime.unlink_mapped_shm()
        if gpu_ids:
            os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        if self.executor is None:
            self.executor = Executor(self.rank, resources, gpu_ids, self.loop)
            self.executor.plane = self.plane
            self.executor.board = self.claims
            self.loop.local_hook = self.executor.on_local
        loop = self.loop
        loop.refs.job = job
        client = CoreClient(self.rank, job, loop)
        session = runtime.Session("worker", self.rank, job, loop, client, self.config, namespace)
        session.executor = self.executor
        session.host = host_name(self.rank, self.config.ranks_per_host)
        session.node_id = node_id_of(session.host)
        runtime.open_session(session, self.plane)
        # (on the comm thread, before any task of the session can arrive: a hook is short setup)
        self.executor.setup_error = run_setup_hook(setup_hook, self.rank)

    def _reset(self) -> None:
        if self.executor is not None:
            self.executor.reset()
        self.plane.reset()
        self.loop.refs.clear()
        self.loop.refs.job = 0
        session = runtime.current()
        if session is not None:
            runtime.close_session(session)


def serve_worker(comm: Any, config: Config, num_gpus: Optional[float] = None,
                 resources: Optional[Dict[str, float]] = None, spawned: Optional[tuple] = None,
                 num_cpus: Optional[float] = None, replacement: Optional[tuple] = None,
                 detect_gpus: bool = True) -> None:
    """Serve tasks on this rank until the driver's process ends; then leave the process.
    A worker the driver spawned (spawn.py) is given its share of ``init()``'s GPUs and
    resources, and ``spawned``: the communicators to disconnect from the driver at the end. A
    process that replaces a dead rank (replacement.py) is given ``replacement``: (generation, the
    job rank of each rank of ``comm``); it has no arena (the ranks of its host made theirs
    together, at the start)."""
    transport = MPITransport(comm, *replacement) if replacement is not None else MPITransport(comm)
    rank = transport.rank
    runtime.install_fork_guard()  # (spawned workers come here without init(), which installs them)
    runtime.install_crash_reports()
    context.install_task_io()
    try:
        runtime.open_rank_log(rank, config)
    except ValueError as exc:  # (the driver opened its own file there: it says so too, if it failed)
        sys.stderr.write(f"hpcray: rank {rank}: {exc}\n")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides; it sends EXIT
    if hasattr(signal, "SIGUSR1"):  # asks the driver for its status table (status.py); sent to a
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # whole job, it must not end the workers
    terminate_at: List[float] = []
    signal.signal(signal.SIGTERM, lambda s, f: terminate_at.append(time.monotonic() + TERM_GRACE_S))
    arena = runtime.start_arena(comm, config) if replacement is None else None
    claims = runtime.open_claims(comm) if replacement is None else None
    loop = CommLoop(rank, transport, config.spin_us, config.max_sleep_us, config.inline_progress)
    agent = WorkerAgent(rank, loop, config, arena, spawned is not None)
    agent.claims = claims
    if replacement is not None:
        agent.ranks_died = agent.plane.replacement = True
    runtime.end_job_on_loop_failure(loop, comm, host_name(rank, config.ranks_per_host), lambda: agent.executor)
    loop.agent = agent.handle
    loop.send(0, (P.HELLO, runtime.local_rank_info(rank, config, num_cpus=num_cpus, num_gpus=num_gpus,
                                                   detect_gpus=detect_gpus,
                                                   resources=resources)))
    # What this process holds now (modules, the user's script up to init()) lives until the end:
    # the cyclic collector need not walk it again. Without this, a full collection walked it all
    # (about 12 ms here) whenever tasks or calls queued on this rank aged into the oldest
    # generation, which made a rank that fell behind fall further behind.
    gc.freeze()
    loop.start()
    code = 0
    while loop.thread.is_alive():
        loop.thread.join(0.25)
        if terminate_at and time.monotonic() > terminate_at[0]:
            code = 128 + signal.SIGTERM
            loop.stop(2.0)
            os._exit(code)
    if loop.error is not None:
        code = 1
    busy = agent.executor is not None and agent.executor.busy()
    settle = time.monotonic() + SETTLE_S  # a task about to end may end: then the arena can be freed
    backoff = Backoff()
    while busy and time.monotonic() < settle:
        backoff.sleep()
        busy = agent.executor.busy()
    if agent.ranks_died:
        runtime.finalize_after_failure([], config.exit_timeout_s, status=code)
        _leave_process(code)
    _leave_process(code, comm, arena, busy, spawned, claims)


def _leave_process(code: int, comm: Any = None, arena: Any = None, busy: bool = False,
                   spawned: Optional[tuple] = None, claims: Any = None) -> None:
    """Finalize MPI and end this worker process without returning into the user's program.

    ``os._exit`` right after ``MPI_Finalize`` races with MPICH's process manager (measured: 2 in
    20 jobs reported as killed); the C library's ``exit`` runs the MPI library's own exit
    handlers and does not (0 in 70), while still skipping the user's code below ``init()``.
    """
    try:
        from mpi4py import MPI
        if arena is not None:
            arena.close(comm, busy)
        if claims is not None:
            claims.close()
        if not MPI.Is_finalized():
            if comm is not None:
                comm.Free()
            runtime.disconnect(spawned)
            MPI.Finalize()
        import ctypes
        ctypes.CDLL(None).exit(code)
    finally:
        os._exit(code)
