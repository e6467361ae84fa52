"""A fake NVML (the ``pynvml`` module's calls hpcray uses), for GPU tests on machines without GPUs.

Put this directory first on PYTHONPATH and name the GPUs in ``FAKE_NVML_GPUS``, comma separated
(``NVIDIA A100-SXM4-80GB,NVIDIA A100-SXM4-80GB``). Without it, nvmlInit fails as on a machine
without a driver; with ``FAKE_NVML_HANG`` set it never returns. Each GPU's UUID is ``GPU-fake-<index>``.
"""

import os


class NVMLError(Exception):
    pass


def _names():
    raw = os.environ.get("FAKE_NVML_GPUS")
    if raw is None:
        raise NVMLError("NVML Shared Library Not Found (fake NVML: FAKE_NVML_GPUS is not set)")
    return [name.strip() for name in raw.split(",") if name.strip()]


def nvmlInit():
    if os.environ.get("FAKE_NVML_HANG"):  # a driver that does not answer
        import time
        time.sleep(3600)
    _names()


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return len(_names())


def nvmlDeviceGetHandleByIndex(index):
    if not 0 <= index < len(_names()):
        raise NVMLError(f"Invalid Argument: no GPU {index}")
    return index


def nvmlDeviceGetUUID(handle):
    return f"GPU-fake-{handle:04d}"


def nvmlDeviceGetName(handle):
    return _names()[handle]
