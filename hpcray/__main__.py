"""``python -m hpcray app.py [args]``: run a Ray program unchanged on hpcray.

``import ray`` and ``from ray.util... import ...`` in the program (and in the modules it imports,
on every rank) resolve to hpcray's. Works the same under ``mpiexec -n N python -m hpcray app.py``
and in ``slurm/job.sbatch``. ``python -m hpcray -m module [args]`` runs a module instead.
"""

import os
import runpy
import sys

USAGE = """usage: python -m hpcray [--version] [--srun-mpi] [-h] (SCRIPT | -m MODULE) [ARGS ...]

Run a Ray program unchanged on hpcray: `import ray` in it resolves to hpcray.
  SCRIPT       the program's file, run as __main__ with ARGS in sys.argv
  -m MODULE    run a module as __main__ instead
  --version    print hpcray's version
  --srun-mpi   print the `srun --mpi=` plugin that matches the MPI mpi4py loads (slurm/job.sbatch)
Under MPI: mpiexec -n N python -m hpcray app.py (every rank runs it, as with python app.py)."""


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__
        print(f"hpcray {__version__}")
        return 0
    if argv[0] == "--srun-mpi":
        from ._private.launchers import srun_mpi_plugin
        print(srun_mpi_plugin())
        return 0
    from ._private import ray_alias
    from ._private.config import RAY_ALIAS_ENV
    os.environ[RAY_ALIAS_ENV] = "1"  # every process of the job resolves `ray` the same way
    ray_alias.install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print(USAGE, file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return 0
    script = argv[0]
    if not os.path.exists(script):
        print(f"python -m hpcray: can't open file {script!r}: no such file", file=sys.stderr)
        return 2
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python app.py` would
    runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
