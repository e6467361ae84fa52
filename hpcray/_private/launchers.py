"""What the launcher of this process says about the job, read from its environment: whether a
process manager started it as one of many, how many copies it started, the CPUs Slurm gave each
task, and which ``srun --mpi`` plugin matches the MPI library mpi4py loads.

Each launcher has its own variables: Slurm (``SLURM_*``), MPICH's Hydra and Slurm's PMI-2
(``PMI_*``, ``MPI_LOCALNRANKS``), Open MPI's launcher (``OMPI_COMM_WORLD_*``), PMIx (``PMIX_*``).
"""

from __future__ import annotations

import os
from typing import Optional, Tuple


def launched_by_mpi() -> bool:
    """True when a process manager (mpiexec, srun with PMI) started this process as one of many."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "PMI_RANK",
                 "PMIX_RANK", "HYDI_CONTROL_FD", "MPIR_CVAR_CH3_INTERFACE_HOSTNAME"):
        if name in os.environ:
            return True
    return os.environ.get("SLURM_NTASKS", "1") not in ("", "1") and "SLURM_PROCID" in os.environ


def launcher_tasks() -> Tuple[int, str]:
    """How many copies of this program the launcher started, as it says in the environment, and
    the variable that says so: ``(4, "SLURM_STEP_NUM_TASKS=4")``; ``(1, "")`` when none says more.

    An MPI launcher's own count wins (MPICH's Hydra and Slurm's PMI-2 set ``PMI_SIZE``, Open MPI's
    launcher ``OMPI_COMM_WORLD_SIZE``): an ``mpiexec`` inside an allocation starts its proxies
    with ``srun``, so its ranks also see that step's count of nodes. Without one, an ``srun``
    step's ``SLURM_STEP_NUM_TASKS``; the batch script's ``SLURM_NTASKS`` (the whole allocation's)
    does not count: the script runs once."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        raw = os.environ.get(name, "")
        if raw.isdigit():
            return (int(raw), f"{name}={raw}") if int(raw) > 1 else (1, "")
    raw = os.environ.get("SLURM_STEP_NUM_TASKS", "")
    if os.environ.get("SLURM_STEP_ID", "").isdigit() and raw.isdigit() and int(raw) > 1:
        return int(raw), f"SLURM_STEP_NUM_TASKS={raw}"
    return 1, ""


def no_process_manager() -> bool:
    """Whether an ``srun`` step of several tasks gave them no process-management interface at all
    (``srun --mpi=none``, or a Slurm whose ``MpiDefault`` is none): no ``PMI_*``, ``PMIX_*`` or
    ``OMPI_*`` variable. Every MPI would then start as a world of one, so this is known before
    MPI is initialized (which, killed half-way by srun, leaves shared memory behind)."""
    count, evidence = launcher_tasks()
    if count < 2 or not evidence.startswith("SLURM_STEP_NUM_TASKS"):
        return False
    return not any(name.startswith(("PMI_", "PMIX_", "OMPI_")) for name in os.environ)


def slurm_cpus_per_task() -> Optional[float]:
    raw = os.environ.get("SLURM_CPUS_PER_TASK")
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def slurm_binds_gpus() -> bool:
    """Whether Slurm bound GPUs to each task (``--gpus-per-task``, or a per-task GPU TRES): each
    task's view is its own, even where device cgroups make every task see its GPU as "0"."""
    return bool(os.environ.get("SLURM_GPUS_PER_TASK")) or "gpu" in os.environ.get("SLURM_TRES_PER_TASK", "")


def srun_mpi_plugin(library_version: Optional[str] = None) -> str:
    """The ``srun --mpi`` plugin that starts ranks of the MPI library mpi4py loads: ``pmix`` for
    Open MPI (4 and 5 speak PMIx only), ``cray_shasta`` for Cray MPICH, ``pmi2`` for MPICH and the
    MPIs built on it (Intel MPI, MVAPICH). ``library_version``: MPI_Get_library_version's text
    (read without initializing MPI when not given)."""
    if library_version is None:
        import mpi4py
        mpi4py.rc.initialize = False  # the batch script asks; it must not become an MPI process
        from mpi4py import MPI
        library_version = MPI.Get_library_version()
    if "Open MPI" in library_version:
        return "pmix"
    if "CRAY MPICH" in library_version.upper():
        return "cray_shasta"
    return "pmi2"
