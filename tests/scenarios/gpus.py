"""GPUs as a user sees them, with a fake NVML of GPUS_SEEN A100s (tests/fake_nvml): each GPU owned
by one rank, tasks narrowed to theirs, num_gpus=0 seeing none, Ray's accelerator names.

Prints one JSON line: the job's GPU total, the (rank, ids, CUDA_VISIBLE_DEVICES) of as many
concurrent one-GPU tasks as there are GPUs, what num_gpus=0 tasks and actors see, and whether
accelerator_type= tasks ran. With ``plain`` (GPUs from CUDA_VISIBLE_DEVICES, no model name):
no accelerator_type checks."""

import json
import os
import sys
import time

import hpcray as ray
from hpcray.util.accelerators import NVIDIA_A100, NVIDIA_H100

ray.init()
total = ray.cluster_resources()
gpu_count = int(total.get("GPU", 0))


@ray.remote
class Gate:
    """Holds each task until all have arrived: the tasks provably hold their GPUs at once."""

    def __init__(self):
        self.arrived = 0

    def arrive(self):
        self.arrived += 1

    def count(self):
        return self.arrived


@ray.remote(num_gpus=1)
def hold_a_gpu(gate, expected):
    ray.get(gate.arrive.remote())
    deadline = time.monotonic() + 30
    while ray.get(gate.count.remote()) < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return (ray.get_runtime_context().get_rank(), ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES"))


@ray.remote(num_gpus=0)
def no_gpu():
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote(num_gpus=0)
class NoGPUActor:
    def view(self):
        return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")


@ray.remote(accelerator_type=NVIDIA_A100)
def on_an_a100():
    return True


gate = Gate.remote()
held = ray.get([hold_a_gpu.remote(gate, gpu_count) for _ in range(gpu_count)], timeout=60)
actor = NoGPUActor.remote()
seen = {"total": gpu_count, "cpus": total.get("CPU"), "held": held, "no_gpu": ray.get(no_gpu.remote(), timeout=60),
        "no_gpu_actor": ray.get(actor.view.remote(), timeout=60)}
if sys.argv[1:] != ["plain"]:
    wrong_model = on_an_a100.options(accelerator_type=NVIDIA_H100).remote()
    seen["h100_task_pending"] = ray.wait([wrong_model], timeout=0.5)[0] == []
    ray.cancel(wrong_model)
    seen["a100"] = total.get("accelerator_type:A100")
    seen["a100_task"] = ray.get(on_an_a100.remote(), timeout=60)
print("GPUS " + json.dumps(seen), flush=True)
