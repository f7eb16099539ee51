"""`sjd-batch bench-gpu`, rehearsed on the CPU (`--small`): every step runs and writes its JSON, and the
budget cuts steps instead of being overrun."""

from __future__ import annotations

import json

from sjd_batch import cli

SMALL = ["bench-gpu", "--small", "--device", "cpu", "--dtype", "float32",
         "--tests", "tests/test_projection.py", "--windows", "1,4", "--batch-sizes", "1,2",
         "--prompts", "4", "--bench-batch-sizes", "2", "--methods", "ar,sjd"]


def test_small_rehearsal_writes_every_file(tmp_path):
    out = tmp_path / "gpu"
    assert cli.main([*SMALL, "--out", str(out), "--budget-s", "300"]) == 0
    summary = json.loads((out / "bench-gpu.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["tests", "forward small", "bench tiny-random"]
    assert summary["steps"][0]["status"] == "no gpu-marked test collected"
    forward = json.loads((out / "forward-small.json").read_text())
    assert set(forward["forward_ms"]) == {"1,1", "1,2", "4,1", "4,2"} and forward["cfg_rows"]
    assert forward["arch"]["hidden"] == 64 and forward["tokens_per_image"] in range(60, 80)
    bench = json.loads((out / "bench-tiny-random.json").read_text())
    assert {r["method"] for r in bench["results"]} == {"ar", "sjd"}


def test_budget_cuts_steps(tmp_path):
    out = tmp_path / "gpu"
    assert cli.main([*SMALL, "--out", str(out), "--budget-s", "0.001"]) == 1
    steps = json.loads((out / "bench-gpu.json").read_text())["steps"]
    assert [s["status"] for s in steps[1:]] == ["cut by budget", "cut by budget"]
