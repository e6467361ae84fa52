"""A task that ends its rank's process (os._exit, a segfault) leaves a Python traceback naming
the task on the terminal (faulthandler on every rank; os._exit says which task called it).

    python crash_report.py exit|exit0|segfault        mpiexec -n 4 python crash_report.py exit|exit0|segfault
"""

import os
import sys

import hpcray as ray

ray.init()


@ray.remote
def calls_os_exit(code):
    os._exit(code)


@ray.remote
def reads_address_zero():
    import ctypes
    return ctypes.string_at(0)


print("SUBMITTING", flush=True)
if sys.argv[1] == "segfault":
    ray.get(reads_address_zero.remote(), timeout=60)
else:  # exit: os._exit(7); exit0: os._exit(0), which must not end the job looking successful
    ray.get(calls_os_exit.remote(7 if sys.argv[1] == "exit" else 0), timeout=60)
print("NOT_REACHED", flush=True)
