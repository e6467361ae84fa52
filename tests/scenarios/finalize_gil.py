"""runtime.finalize_releasing_gil lets the process's other threads run while MPI_Finalize waits
(mpi4py's MPI.Finalize holds the GIL throughout, so a watchdog thread could never fire): rank 1
reaches MPI_Finalize a second late; meanwhile a thread on rank 0 keeps ticking.

    mpiexec -n 2 python finalize_gil.py
"""

import threading
import time

from mpi4py import MPI

from hpcray._private.runtime import finalize_releasing_gil

comm = MPI.COMM_WORLD
rank = comm.Get_rank()
comm.Barrier()
ticks = []


def tick():
    while True:
        ticks.append(time.monotonic())
        time.sleep(0.05)


threading.Thread(target=tick, daemon=True).start()
if rank == 1:
    time.sleep(1.0)
started = time.monotonic()
finalize_releasing_gil()
took = time.monotonic() - started
assert MPI.Is_finalized()
during = sum(1 for t in ticks if t > started)
if rank == 0:
    print(f"FINALIZE took {took:.2f} s, ticks meanwhile {during}", flush=True)
