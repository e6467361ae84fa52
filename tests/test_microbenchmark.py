"""The benchmark command runs and writes its report (figures are never asserted: the machine is
shared and noisy)."""

import json

import pytest

from conftest import run_mpi, run_single


@pytest.mark.parametrize("mode", ["single", "mpi"])
def test_microbenchmark_runs_and_writes_json(mode, tmp_path):
    out = tmp_path / "bench.json"
    args = ["-m", "hpcray.microbenchmark", "--rounds", "1", "--scale", "2000", "--json", str(out),
            "--only", "tasks sync", "actor calls async", "put calls", "placement", "by value", "timeline"]
    proc = run_single(args, timeout=240) if mode == "single" else run_mpi(args, ranks=3, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    cases = report["hpcray"]["cases"]
    assert set(cases) == {"single client tasks sync", "1:1 actor calls async", "n:n actor calls async",
                          "1:1 async-actor calls async", "single client put calls",
                          "placement group create/removal", "100 MB argument passed by value"}
    for name, result in cases.items():
        assert result["min"] <= result["median"] <= result["max"] and result["median"] > 0, (name, result)
    assert report["hpcray"]["scale"][0]["tasks"] == 2000
    cost = report["hpcray"]["timeline_cost"]  # recording off and on, in alternating sessions
    assert set(cost) == {"single client tasks sync", "single client tasks async", "1:1 actor calls sync"}, cost
    assert all(row["off"] > 0 and row["on"] > 0 for row in cost.values()), cost
    assert report["limits"]["memcopy_GBps"] > 0
    if mode == "mpi":
        assert report["limits"]["mpi_pingpong_one_way_us"] > 0
    assert "single client tasks sync" in proc.stdout
