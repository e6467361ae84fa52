"""A worker_process_setup_hook named by a string (setup_hook.py scenario)."""

import os


def setup():
    os.environ["SETUP_HOOK_RAN"] = f"string in {os.getpid()}"
