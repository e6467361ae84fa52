"""GPUs: who owns which (gpus.share_out), and what tasks see, in every launch mode, with a fake
NVML (tests/fake_nvml) giving the machine 4 A100s. Slurm's GPU binding is tested on a real Slurm
in test_slurm.py."""

import collections
import json
import os

import pytest

from conftest import run_mpi, run_single, run_spawn
from hpcray._private import gpus

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_NVML = os.path.join(HERE, "fake_nvml")
A100S = ",".join(["NVIDIA A100-SXM4-80GB"] * 4)
UUIDS = [f"GPU-fake-{i:04d}" for i in range(4)]


def ranks(seen, wanted=None, count=3, host="h"):
    return [gpus.RankGPUs(r, host, seen, wanted) for r in range(1, count + 1)]


def test_every_gpu_goes_to_one_rank_and_an_uneven_split_is_said():
    owned, notes = gpus.share_out(ranks(["a", "b", "c", "d"]), bound=False)
    assert owned == {1: ["a", "b"], 2: ["c"], 3: ["d"]}
    assert notes == ["4 GPUs of host h over 3 worker ranks: rank 1 has 2; ranks 2, 3 have 1 each "
                     "(every GPU is used by one rank)"]


def test_fewer_gpus_than_ranks_are_not_shared():
    owned, notes = gpus.share_out(ranks(["a", "b"]), bound=False)
    assert owned == {1: ["a"], 2: ["b"], 3: []}
    assert "rank 3 has 0" in notes[0]


def test_an_even_split_says_nothing():
    owned, notes = gpus.share_out(ranks(["a", "b", "c", "d", "e", "f"]), bound=False)
    assert owned == {1: ["a", "b"], 2: ["c", "d"], 3: ["e", "f"]} and notes == []


def test_an_amount_per_rank_takes_distinct_gpus():
    owned, notes = gpus.share_out(ranks(["a", "b", "c", "d"], wanted=1), bound=False)
    assert owned == {1: ["a"], 2: ["b"], 3: ["c"]} and notes == []


def test_amounts_beyond_the_host_share_gpus_and_say_so():
    owned, notes = gpus.share_out(ranks(["a", "b", "c", "d"], wanted=2), bound=False)
    assert [len(set(ids)) for ids in owned.values()] == [2, 2, 2]
    assert sorted(set(sum(owned.values(), []))) == ["a", "b", "c", "d"]
    assert "asked for 6 in all: they share GPUs" in notes[0]


def test_without_gpus_an_amount_gives_pretend_ids():
    owned, notes = gpus.share_out(ranks([], wanted=2), bound=False)
    assert owned == {1: ["0", "1"], 2: ["0", "1"], 3: ["0", "1"]} and notes == []


def test_bound_or_different_views_are_kept():
    assert gpus.share_out(ranks(["0"]), bound=True)[0] == {1: ["0"], 2: ["0"], 3: ["0"]}
    views = [gpus.RankGPUs(1, "h", ["0"], None), gpus.RankGPUs(2, "h", ["1"], None)]
    assert gpus.share_out(views, bound=False)[0] == {1: ["0"], 2: ["1"]}


def test_hosts_share_out_their_own_gpus():
    both = ranks(["a", "b"], count=2, host="x") + [gpus.RankGPUs(r, "y", ["a", "b"], None) for r in (3, 4)]
    assert gpus.share_out(both, bound=False)[0] == {1: ["a"], 2: ["b"], 3: ["a"], 4: ["b"]}


@pytest.mark.parametrize("name,model", [("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA H100 80GB HBM3", "H100"),
                                        ("Tesla V100-SXM2-16GB", "V100"), ("NVIDIA L40S", "L40S"),
                                        ("NVIDIA A10G", "A10G"), ("weird", None)])
def test_accelerator_type_is_rays_name(name, model):
    assert gpus.accelerator_type([name]) == model


def test_detection_through_nvml(monkeypatch):
    monkeypatch.syspath_prepend(FAKE_NVML)
    monkeypatch.delitem(__import__("sys").modules, "pynvml", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("FAKE_NVML_GPUS", "NVIDIA H100 80GB HBM3,NVIDIA H100 80GB HBM3")
    assert gpus.detect() == (UUIDS[:2], ["NVIDIA H100 80GB HBM3"] * 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # narrowed by the launcher: respected
    assert gpus.detect()[0] == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpus.detect()[0] == []
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.delenv("FAKE_NVML_GPUS")  # no driver: no GPUs, no error
    assert gpus.detect() == ([], [])


@pytest.mark.parametrize("mode", ["single", "mpi", "spawn"])
@pytest.mark.parametrize("per_rank", [None, "1"])
def test_tasks_see_the_gpus_they_own(mode, per_rank):
    env = {"PYTHONPATH": os.pathsep.join([FAKE_NVML, os.path.dirname(HERE)]), "FAKE_NVML_GPUS": A100S}
    if per_rank:
        env["HPCRAY_NUM_GPUS"] = per_rank
    run = {"single": run_single, "mpi": run_mpi, "spawn": run_spawn}[mode]
    proc = run([os.path.join(HERE, "scenarios", "gpus.py")], timeout=120, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    line = next(line for line in proc.stdout.splitlines() if line.startswith("GPUS "))
    seen = json.loads(line[len("GPUS "):])
    workers = 1 if mode == "single" else 3
    expected_total = workers if per_rank else 4
    assert seen["total"] == expected_total, output
    held = seen["held"]
    ids = [gpu for _, owned, _ in held for gpu in owned]
    assert len(ids) == expected_total and len(set(ids)) == expected_total, held  # no GPU held twice
    assert set(ids) <= set(UUIDS)
    for _, owned, visible in held:
        assert len(owned) == 1 and visible == owned[0]
    per_rank_count = collections.Counter(rank for rank, _, _ in held)
    if mode != "single" and not per_rank:
        assert sorted(per_rank_count.values()) == [1, 1, 2], held
        assert "4 GPUs of host" in proc.stderr and "rank 1 has 2; ranks 2, 3 have 1 each" in proc.stderr
    assert seen["no_gpu"] == [[], ""] and seen["no_gpu_actor"] == [[], ""]
    assert seen["a100"] and seen["a100_task"] is True and seen["h100_task_pending"] is True


def test_an_nvml_that_never_answers_ends_a_spawning_init_with_a_message(tmp_path):
    script = tmp_path / "app.py"
    script.write_text("import hpcray as ray\nray.init()\nprint('NOT_REACHED', flush=True)\n")
    env = {"PYTHONPATH": os.pathsep.join([FAKE_NVML, os.path.dirname(HERE)]), "FAKE_NVML_HANG": "1",
           "HPCRAY_INIT_TIMEOUT_S": "4"}
    proc = run_spawn([str(script)], timeout=60, env=env)
    assert proc.returncode != 0 and "NOT_REACHED" not in proc.stdout, proc.stdout + proc.stderr
    assert "looking for GPUs (NVML" in proc.stderr and "HPCRAY_INIT_TIMEOUT_S" in proc.stderr, proc.stderr
