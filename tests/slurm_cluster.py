"""A real single-node Slurm for the tests: ``munged``, ``slurmctld`` and ``slurmd`` from Debian's
packages, with 16 CPUs (more than the machine has: jobs run side by side) and 4 fake GPUs (character devices named through gres), its config, state
and logs in a directory of its own.

CI runs as root on a fresh machine, so the packages are installed when missing (``apt-get``, about
a minute). Where that cannot happen (not root, no apt-get, no network) ``why_not()`` says why and
the Slurm tests skip saying so. Jobs are submitted with ``sbatch`` and waited for with a deadline;
their end state and exit code come from ``sacct -c`` (jobcomp/filetxt: no database daemon).
"""

import os
import shutil
import subprocess
import time
from typing import Dict, Optional, Sequence, Tuple

from conftest import alive

PACKAGES = ["slurm-wlm", "munge", "libpmix-dev"]
CPUS = 16
GPUS = 4
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
         "DEADLINE", "PREEMPTED"}


def _run(command, timeout=60, env=None, check=False) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return proc


def why_not() -> Optional[str]:
    """None when a Slurm can be brought up here (installing its packages if needed), else why not."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged")):
        return None if os.geteuid() == 0 else "the daemons of a test Slurm run as root; these tests are not"
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root"
    if not shutil.which("apt-get"):
        return "Slurm is not installed and this machine has no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    update = _run(["apt-get", "update", "-qq"], timeout=600, env=env)
    install = _run(["apt-get", "install", "-y", "-qq", *PACKAGES], timeout=900, env=env)
    if install.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {(install.stderr or update.stderr)[-1500:]}"
    return None


class SlurmCluster:
    """One node named ``localhost``, partition ``debug``; ``start()``, ``submit()``, ``stop()``."""

    def __init__(self, root: str):
        self.root = root
        self.conf = os.path.join(root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        self._pids = []

    # ---- bring up -------------------------------------------------------------------------
    def start(self, timeout_s: float = 60.0) -> None:
        os.makedirs(os.path.join(self.root, "state"), exist_ok=True)
        os.makedirs(os.path.join(self.root, "spool"), exist_ok=True)
        self._start_munge()
        self._write_config()
        _run(["slurmctld", "-f", self.conf, "-i"], env=self.env, check=True)
        _run(["slurmd", "-f", self.conf, "-N", "localhost"], env=self.env, check=True)
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            self._check_daemons()
            state = _run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test Slurm's node is not up after {timeout_s:.0f} s (sinfo: {state!r}); "
                           f"logs in {self.root}")

    def _check_daemons(self) -> None:
        """Ours must be the daemons that answer: ones left by an earlier cluster hold the ports,
        and ours then end at once (their logs say so)."""
        time.sleep(0.2)
        for name in ("slurmctld", "slurmd"):
            try:
                with open(os.path.join(self.root, f"{name}.pid")) as source:
                    pid = int(source.read().strip())
            except (OSError, ValueError):
                pid = 0
            if not pid or not alive(pid):
                with open(os.path.join(self.root, f"{name}.log"), errors="replace") as source:
                    log = source.read()[-1500:]
                raise RuntimeError(f"the test Slurm's {name} is not running (another Slurm on its ports?):\n{log}")

    def _start_munge(self) -> None:
        if _run(["sh", "-c", "munge -n | unmunge"]).returncode == 0:
            return  # a munged is already serving
        for path in ("/etc/munge", "/var/lib/munge", "/var/log/munge", "/run/munge"):
            os.makedirs(path, exist_ok=True)
        if not os.path.exists("/etc/munge/munge.key"):
            _run(["mungekey", "--create"], check=True)
        _run(["chown", "-R", "munge:munge", "/etc/munge", "/var/lib/munge", "/var/log/munge", "/run/munge"],
             check=True)
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
        for _ in range(50):
            if _run(["sh", "-c", "munge -n | unmunge"]).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("munged started but `munge -n | unmunge` fails")

    def _write_config(self) -> None:
        root = self.root
        for i in range(GPUS):
            device = os.path.join(root, f"nvidia{i}")
            if not os.path.exists(device):
                os.mknod(device, 0o666 | 0o020000, os.makedev(195, i))
        memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20) // 2
        lines = [
            "ClusterName=hpcraytest", "SlurmctldHost=localhost", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SlurmdParameters=config_overrides",
            "MpiDefault=pmi2", "GresTypes=gpu", "ReturnToService=2", "KillWait=5", "MinJobAge=30",
            "SchedulerType=sched/backfill", "InactiveLimit=0", "Waittime=0",
            f"StateSaveLocation={root}/state", f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid", f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log", f"SlurmdLogFile={root}/slurmd.log",
            "JobCompType=jobcomp/filetxt", f"JobCompLoc={root}/jobcomp.txt",
            "SlurmctldPort=16817", "SlurmdPort=16818",
            # job ids never repeat across test clusters: MPICH names a step's shared memory after
            # it, and a segment left by a killed step of an earlier cluster's job 1 made the next
            # job 1 spin in MPI_Init for ever
            f"FirstJobId={1000 + int(time.time()) % 50_000_000}",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={memory_mib} Gres=gpu:{GPUS} State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        with open(self.conf, "w") as out:
            out.write("\n".join(lines) + "\n")
        with open(os.path.join(root, "gres.conf"), "w") as out:
            out.write(f"AutoDetect=off\nNodeName=localhost Name=gpu File={root}/nvidia[0-{GPUS - 1}]\n")

    # ---- jobs -----------------------------------------------------------------------------
    def submit(self, script: str, *flags: str, env: Optional[Dict[str, str]] = None, args: Sequence[str] = ()) -> str:
        """``sbatch FLAGS SCRIPT ARGS`` with ``env`` as the job's environment; the job id."""
        proc = _run(["sbatch", "--parsable", *flags, script, *args], env=dict(env or os.environ, SLURM_CONF=self.conf),
                    check=True)
        return proc.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout_s: float = 180.0) -> Tuple[str, str]:
        """(state, exit code) once the job has ended, as ``sacct`` says: ``("FAILED", "3:0")``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state(job)
            if state and state[0] in ENDED:
                return state
            time.sleep(0.5)
        self.cancel(job)
        raise TimeoutError(f"Slurm job {job} did not end in {timeout_s:.0f} s (last state {self.state(job)}); "
                           f"logs in {self.root}")

    def state(self, job: str) -> Optional[Tuple[str, str]]:
        proc = _run(["sacct", "-c", "-n", "-P", "-j", job, "-o", "State,ExitCode"], env=self.env)
        rows = [line.split("|") for line in proc.stdout.splitlines() if "|" in line]
        if not rows:
            return None
        state, code = rows[-1][0], rows[-1][1]
        return state.split()[0], code

    def squeue_state(self, job: str) -> str:
        return _run(["squeue", "-h", "-j", job, "-o", "%T"], env=self.env).stdout.strip()

    def cancel(self, job: str) -> None:
        _run(["scancel", job], env=self.env)

    # ---- bring down -----------------------------------------------------------------------
    def stop(self, timeout_s: float = 15.0) -> None:
        """Cancel every job, end both daemons and wait until they are gone (a next cluster's
        daemons could not bind their ports while these live)."""
        _run(["scancel", "--user", "root"], env=self.env)
        pids = []
        for name in ("slurmd.pid", "slurmctld.pid"):
            try:
                with open(os.path.join(self.root, name)) as source:
                    pids.append(int(source.read().strip()))
            except (OSError, ValueError):
                continue
        for pid in pids:
            _signal(pid, 15)
        deadline = time.monotonic() + timeout_s
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            _signal(pid, 9)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass
