"""runtime_env={"worker_process_setup_hook": ...}: every process that runs tasks runs it once per
session, before its tasks; a failing hook fails the tasks sent there with RuntimeEnvSetupError.

    python setup_hook.py function|string|broken
"""

import os
import sys

import hpcray as ray
from hpcray import exceptions


def setup():
    os.environ["SETUP_HOOK_RAN"] = f"function in {os.getpid()}"


def broken():
    raise RuntimeError("no licence server")


hooks = {"function": setup, "string": "hook_module.setup", "broken": broken}
ray.init(runtime_env={"worker_process_setup_hook": hooks[sys.argv[1]]})


@ray.remote
def read():
    return os.environ.get("SETUP_HOOK_RAN"), os.getpid()


if sys.argv[1] == "broken":
    try:
        ray.get(read.remote(), timeout=60)
        print("NO ERROR")
    except exceptions.RuntimeEnvSetupError as exc:
        print("SETUP_ERROR", "no licence server" in str(exc) and "failed on rank" in str(exc))
else:
    answers = ray.get([read.remote() for _ in range(8)], timeout=60)
    print("EVERY_PROCESS_RAN_IT", all(value == f"{sys.argv[1]} in {pid}" for value, pid in answers),
          len({pid for _, pid in answers}))
try:
    ray.init(runtime_env={"worker_process_setup_hook": 42}, ignore_reinit_error=True)
except ValueError as exc:
    print("BAD_HOOK", "worker_process_setup_hook" in str(exc))
