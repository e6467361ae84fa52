"""A task that ends its rank's process (os._exit, a segfault) leaves a Python traceback naming
the task on the terminal (faulthandler on every rank; os._exit says which task called it).

    python crash_report.py exit|segfault        mpiexec -n 4 python crash_report.py exit|segfault
"""

import os
import sys

import hpcray as ray

ray.init()


@ray.remote
def calls_os_exit():
    os._exit(7)


@ray.remote
def reads_address_zero():
    import ctypes
    return ctypes.string_at(0)


crash = calls_os_exit if sys.argv[1] == "exit" else reads_address_zero
print("SUBMITTING", flush=True)
ray.get(crash.remote(), timeout=60)
print("NOT_REACHED", flush=True)
