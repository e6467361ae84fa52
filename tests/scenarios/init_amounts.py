"""init(num_cpus=..., num_gpus=..., resources=...) means the same in every launch mode: the job's
totals (shared out over the worker ranks where there are some). Prints the totals, then runs
tasks that need a GPU each."""

import hpcray as ray

ray.init(num_cpus=3, num_gpus=2, resources={"fpga": 3, "half": 0.5})
total = ray.cluster_resources()
print("TOTAL", total.get("CPU"), total.get("GPU"), total.get("fpga"), round(total.get("half", 0), 6))


@ray.remote(num_gpus=1)
def uses_a_gpu():
    return len(ray.get_gpu_ids())


print("GPU_TASKS", ray.get([uses_a_gpu.remote() for _ in range(4)], timeout=60))
