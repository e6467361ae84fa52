"""Worker ranks started by ``init()`` itself, for a driver that is the only process of its job
(``python app.py``, a notebook, ``mpiexec -n 1``): ``MPI_Comm_spawn`` starts them, and the
driver and its workers merge into one communicator on which the same runtime runs as under
``mpiexec`` (rank 0 drives, the spawned ranks serve tasks and actors in their own processes).

    driver:  COMM_SELF.Spawn(python -c BOOTSTRAP PAYLOAD) ─► intercomm.Merge(high=False)
    worker:  Comm.Get_parent().Merge(high=True) ─► import hpcray ─► worker_rank.serve_worker ─► (driver's EXIT) ─► leave

A spawned worker runs no user script: functions arrive pickled. It gets the driver's import path,
working directory and environment (the PAYLOAD and the launcher), so it imports what the driver
imports. It watches the driver's process and leaves, removing its shared-memory files, within
about a second of the driver's death, even a ``kill -9``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import shutil
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from .config import PROCESS_WATCH_S, SPAWN_GONE_S

logger = logging.getLogger("hpcray")

#: what a spawned worker runs (``python -c BOOTSTRAP PAYLOAD``): one line (the process manager's
#: wire protocol cuts arguments at newlines); its first statement names it in ``ps``
BOOTSTRAP = "; ".join([
    "'hpcray spawned worker'",
    "import json, os, sys",
    "payload = json.loads(bytes.fromhex(sys.argv[1]))",
    "os.chdir(payload['cwd'])",
    "os.environ.update(payload['env'])",
    "sys.path[:] = payload['path'] + [p for p in sys.path if p not in payload['path']]",
    "from mpi4py import MPI",
    "parent = MPI.Comm.Get_parent()",
    "merged = parent.Merge(high=True)",
    "from hpcray._private.spawned_worker import main",
    "main(payload, parent, merged)",
])


def blocker() -> Optional[str]:
    """Why spawning workers cannot work here (then tasks run in threads), or None. May put the
    MPI wheel's launcher on PATH: a singleton MPI process spawns through ``mpiexec``."""
    if os.environ.get("SLURM_JOB_ID"):
        # measured: MPI_Comm_spawn from a singleton under srun hangs; Slurm starts the ranks
        return ("this is a Slurm job: start the ranks with srun (or mpiexec -n N) instead of "
                "spawning them")
    if shutil.which("mpiexec") is None:
        beside = os.path.dirname(sys.executable)  # a virtual environment's MPI wheel puts it here
        if not os.path.exists(os.path.join(beside, "mpiexec")):
            return "no mpiexec on PATH, which the MPI library needs to spawn processes"
        os.environ["PATH"] = beside + os.pathsep + os.environ.get("PATH", "")
    return None


def single_host_mpi_settings() -> None:
    """Settings for an MPI library this process loads as a singleton: its job (it and the workers
    it may spawn, which inherit its environment) runs on one host. UCX, which the MPICH wheel
    loads, patches ``mmap`` and its kin in every process as the library loads, to keep a cache of
    memory registered with network cards up to date: 40 ms of each process's start here (a third
    of loading MPI), for a job that registers no network memory. A value the user set is kept."""
    os.environ.setdefault("UCX_MEM_MMAP_HOOK_MODE", "none")


def split_resources(resources: Optional[Dict[str, float]], workers: int) -> List[Dict[str, float]]:
    """Custom resources given to ``init()`` shared out over the workers (whole units as evenly as
    possible, fractions in equal parts)."""
    shares: List[Dict[str, float]] = [{} for _ in range(workers)]
    for name, amount in (resources or {}).items():
        if float(amount).is_integer():
            whole = int(amount)
            for i in range(workers):
                part = whole // workers + (1 if i < whole % workers else 0)
                if part:
                    shares[i][name] = float(part)
        else:
            for share in shares:
                share[name] = amount / workers
    return shares


class CrashReports:
    """Where spawned workers write their crash reports (faulthandler's, a task's ``os._exit``):
    a file of the driver's, which it prints when it sees a worker die. On the terminal the
    report is not enough: when a spawned worker dies by a signal, MPICH's launcher kills the
    other workers and its proxies, and what the dead worker wrote last can be lost in the pipe
    to its proxy (seen: 2 runs in 20 under load). The file is unlinked from the start (nothing
    to leave behind, even after a SIGKILL); workers open it through ``/proc/<driver>/fd/<n>``."""

    def __init__(self) -> None:
        self.file: Optional[Any] = None
        self.shown = 0  # bytes of it printed so far
        if os.path.isdir(f"/proc/{os.getpid()}/fd"):
            try:
                self.file = tempfile.TemporaryFile(prefix="hpcray-crash-")
            except OSError as exc:
                logger.info("hpcray: spawned workers' crash reports go to the terminal only: %s", exc)

    @property
    def path(self) -> Optional[str]:
        return f"/proc/{os.getpid()}/fd/{self.file.fileno()}" if self.file is not None else None

    def unseen(self) -> str:
        """What workers wrote since the last call."""
        if self.file is None:
            return ""
        data = os.pread(self.file.fileno(), 1 << 20, self.shown)
        self.shown += len(data)
        return data.decode(errors="replace")


CRASH_REPORTS: Optional[CrashReports] = None  # the driver's, made with its first spawn


def open_crash_file(path: Optional[str]) -> Optional[Any]:
    """A spawned worker: the driver's crash-report file, for appending (None: the terminal)."""
    if not path:
        return None
    try:
        return open(os.open(path, os.O_WRONLY | os.O_APPEND), "w", buffering=1)
    except OSError:
        return None


def driver_payload(**extra: Any) -> Dict[str, Any]:
    """What a process started by the driver needs to import what the driver imports: its import
    path, working directory and hpcray settings; and the driver's pid and host (it leaves when
    that process is gone)."""
    cwd = os.getcwd()
    payload = {
        "path": [os.path.abspath(p) if p else cwd for p in sys.path],
        "cwd": cwd,
        "driver": os.getpid(),
        "host": socket.gethostname(),
        "env": {name: value for name, value in os.environ.items() if name.startswith("HPCRAY_")},
        "crash_file": None,
    }
    payload.update(extra)
    return payload


def bootstrap_args(payload: Dict[str, Any]) -> List[str]:
    """The arguments of ``python`` for a spawned worker (BOOTSTRAP with its payload, in hex: the
    process manager's wire protocol drops backslashes, which JSON uses in strings)."""
    return ["-c", BOOTSTRAP, json.dumps(payload).encode().hex()]


def spawn_workers(count: int, num_gpus: Optional[float], resources: Optional[Dict[str, float]],
                  timeout_s: float) -> Tuple[Any, Any, Tuple[List[str], List[str]]]:
    """Start ``count`` worker ranks; returns (intercommunicator, merged intracommunicator, in
    which this process is rank 0, and the GPUs the workers see).

    The workers see what the driver sees (one host, one environment), so the driver looks for
    GPUs once, for all of them, in a thread while ``MPI_Comm_spawn`` starts them (which lets the
    GIL go): asking NVML takes 25-40 ms of a process's start, most of it importing pynvml. An
    NVML that has not answered within half of ``timeout_s`` is an error (before ``SpawnWatch``,
    which waits the whole of it, would blame the workers), as a worker that did not report
    would be."""
    from mpi4py import MPI
    from . import gpus
    seen: List[Tuple[List[str], List[str]]] = []
    detector = threading.Thread(target=lambda: seen.append(gpus.detect()), name="hpcray-gpu-detect", daemon=True)
    detector.start()
    global CRASH_REPORTS
    if CRASH_REPORTS is None:
        CRASH_REPORTS = CrashReports()
    payload = driver_payload(
        crash_file=CRASH_REPORTS.path,
        # init()'s amounts are the job's totals: each worker gets its share, as under mpiexec
        num_gpus=[share.get("GPU", 0.0) for share in split_resources({"GPU": num_gpus}, count)]
        if num_gpus is not None else None,
        resources=split_resources(resources, count),
        detect_gpus=False)
    info = MPI.Info.Create()
    info.Set("wdir", payload["cwd"])
    group = _own_process_group()
    try:
        inter = MPI.COMM_SELF.Spawn(sys.executable, args=bootstrap_args(payload), maxprocs=count, info=info)
    finally:
        info.Free()
        _back_to_process_group(group)
    merged = inter.Merge(high=False)
    detector.join(timeout_s / 2)
    if detector.is_alive():
        raise RuntimeError(f"hpcray.init(): looking for GPUs (NVML, through pynvml) did not finish within "
                           f"{timeout_s / 2:g} s, half of HPCRAY_INIT_TIMEOUT_S")
    return inter, merged, seen[0] if seen else ([], [])


class SpawnWatch:
    """A way out of joining the workers, where MPI has none: ``MPI_Comm_spawn`` and the merge wait
    forever for workers that ended before joining (measured: a worker whose Python fails at
    start leaves the driver and the launcher each spinning a core, for good), and nothing can
    interrupt a thread inside them. So, while ``init()`` spawns and joins its workers, a thread
    watches the processes the launcher started: when none of them has been alive for
    ``SPAWN_GONE_S``, or ``timeout_s`` passes, it says so and ends the program (their own output,
    above, says why they ended)."""

    def __init__(self, count: int, timeout_s: float):
        self.count = count
        self.timeout_s = timeout_s
        self.earlier_children = {pid for pid, (parent, _) in process_table().items() if parent == os.getpid()}
        self.done = threading.Event()
        threading.Thread(target=self._watch, name="hpcray-spawn-watch", daemon=True).start()

    def stop(self) -> None:
        self.done.set()

    def _launched(self) -> Tuple[List[int], int, bool]:
        """The processes the launcher started (it among them), how many are not launchers, and
        whether processes can be seen at all (no /proc: then only the timeout ends the wait)."""
        table = process_table()
        ours = [pid for pid, (parent, _) in table.items()
                if parent == os.getpid() and pid not in self.earlier_children]
        found: List[int] = []
        while ours:
            found.extend(ours)
            level = set(ours)
            ours = [pid for pid, (parent, _) in table.items() if parent in level]
        workers = sum(1 for pid in found if table[pid][1] not in _LAUNCHER_NAMES)
        return found, workers, bool(table)

    def _watch(self) -> None:
        started = last_alive = time.monotonic()
        while not self.done.wait(PROCESS_WATCH_S / 5):
            now = time.monotonic()
            launched, workers, visible = self._launched()
            if workers or not visible:
                last_alive = now
            if now - last_alive > SPAWN_GONE_S:
                why = (f"the {self.count} spawned worker rank(s) ended before joining the driver "
                       "(their output above says why)")
            elif now - started > self.timeout_s:
                why = (f"the {self.count} spawned worker rank(s) did not join the driver within "
                       f"HPCRAY_INIT_TIMEOUT_S={self.timeout_s:g} s")
            else:
                continue
            if self.done.is_set():
                return
            try:
                sys.stderr.write(f"hpcray.init(): {why}; ending the program. HPCRAY_SPAWN=0 runs tasks "
                                 "in threads of this process instead.\n")
                sys.stderr.flush()
            except BaseException:  # (no stderr, say): the program must end all the same
                pass
            # Stop them all before killing any: a launcher or proxy that sees another of them die
            # kills the processes of its job, this one among them (seen: 1 run in 12 ended by
            # SIGKILL instead of status 1). A stopped process cannot act; then SIGKILL.
            for signum in (signal.SIGSTOP, signal.SIGKILL):
                for pid in launched:
                    try:
                        os.kill(pid, signum)
                    except OSError:
                        pass
            from .runtime import unlink_mapped_shm  # (this process's own MPI segment: no finalize)
            unlink_mapped_shm()
            os._exit(1)


#: process names of launchers and their helpers (MPICH's hydra; Open MPI's PRRTE)
_LAUNCHER_NAMES: Set[str] = {"mpiexec", "mpirun", "hydra_pmi_proxy", "prterun", "prted", "prte", "orted"}


def _stat(pid: "int | str") -> Tuple[str, List[str]]:
    """(command name, the fields after it) of /proc/PID/stat; OSError where there is none."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    return text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 1:].split()


def process_table() -> Dict[int, Tuple[int, str]]:
    """pid -> (parent pid, command name) of this host's live processes; {} without /proc."""
    table: Dict[int, Tuple[int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            name, fields = _stat(entry)
        except OSError:
            continue
        if len(fields) > 1 and fields[0] not in ("Z", "X"):
            table[int(entry)] = (int(fields[1]), name)
    return table


def _own_process_group() -> Optional[int]:
    """The launcher a singleton MPI process forks to spawn (MPICH's ``mpiexec``) kills its whole
    process group when the driver dies (measured: a shell script, or pytest, that started the
    driver went with it). So it is forked into a group of its own: the driver's for the moment
    of the spawn. Returns the group to go back to, or None when nothing changed."""
    try:
        group = os.getpgid(0)
        if group == os.getpid():
            return None  # the driver leads its group already: the launcher's group is the driver's
        os.setpgid(0, 0)
        return group
    except OSError:  # a session leader, or no process groups here
        return None


def _back_to_process_group(group: Optional[int]) -> None:
    if group is not None:
        try:
            os.setpgid(0, group)
        except OSError as exc:
            logger.warning("hpcray: could not return to process group %d after spawning workers: %s",
                           group, exc)


def watch_workers(world: Any, describe: Any) -> None:
    """The driver watches the workers it spawned: one that dies (a crash, ``os._exit``, the OOM
    killer) ends the program within about a second, loudly, naming the rank: with this MPI the
    job cannot go on without it, and nothing would tell the driver otherwise (it would wait for
    that rank's results forever)."""
    workers = [(info.rank, info.pid) for info in world.workers]

    def watch() -> None:
        while not world.exited:
            dead = [rank for rank, pid in workers if not process_alive(pid)]
            if dead and not world.exited:
                try:
                    them = "them" if len(dead) > 1 else "it"
                    time.sleep(PROCESS_WATCH_S / 5)  # (a report being written as the process went)
                    report = CRASH_REPORTS.unseen() if CRASH_REPORTS is not None else ""
                    sys.stderr.write(report + f"hpcray: spawned worker {describe(dead)} died (see the "
                                     f"output above); the job cannot go on without {them}: ending the "
                                     "program\n")
                    sys.stderr.flush()
                except BaseException:  # (no stderr, say): the program must end all the same
                    pass
                for _, pid in workers:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
                from .runtime import unlink_mapped_shm
                unlink_mapped_shm()
                os._exit(1)
            time.sleep(PROCESS_WATCH_S)

    threading.Thread(target=watch, name="hpcray-worker-watch", daemon=True).start()


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` (of this host) still runs: not gone, not a zombie."""
    if not os.path.isdir("/proc"):  # (macOS): ask the kernel, which cannot tell zombies apart
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    try:
        return _stat(pid)[1][0] not in ("Z", "X")
    except (OSError, IndexError):
        return False
