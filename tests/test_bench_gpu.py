"""`sjd-batch bench-gpu`, rehearsed on the CPU (`--small`): every step runs and writes its JSON, and the
budget cuts steps instead of being overrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sjd_batch import cli
from sjd_batch.commands.bench_gpu import gpu_test_files
from sjd_batch.job import git_revision

REPO = Path(__file__).resolve().parents[1]

SMALL = ["bench-gpu", "--small", "--device", "cpu", "--dtype", "float32",
         "--tests", "tests/test_projection.py", "--windows", "1,4", "--batch-sizes", "1,2",
         "--prompts", "4", "--bench-batch-sizes", "2", "--methods", "ar,sjd", "--generate-batch-sizes", "1,2",
         "--generate-tokens", "41"]


def test_small_rehearsal_writes_every_file(tmp_path):
    out = tmp_path / "gpu"
    assert cli.main([*SMALL, "--out", str(out), "--budget-s", "300"]) == 0
    summary = json.loads((out / "bench-gpu.json").read_text())
    assert [s["step"] for s in summary["steps"]] == ["tests", "forward small", "generate small",
                                                      "bench tiny-random"]
    assert summary["steps"][0]["status"] == "no gpu-marked test collected"
    forward = json.loads((out / "forward-small.json").read_text())
    assert set(forward["forward_ms"]) == {"1,1", "1,2", "4,1", "4,2"} and forward["cfg_rows"]
    assert forward["arch"]["hidden"] == 64 and forward["tokens_per_image"] in range(60, 80)
    assert forward["gpu"] == "cpu"  # the device's name: `project --forward` reads the GPU from it
    generate = json.loads((out / "generate-small.json").read_text())
    runs = {(r["method"], r["batch"]): r for r in generate["results"]}
    assert set(runs) == {(m, b) for m in ("ar", "hf-generate") for b in (1, 2)}
    assert all(r["ms_per_token"] > 0 for r in runs.values()) and generate["tokens_per_image"] == 37
    bench = json.loads((out / "bench-tiny-random.json").read_text())
    assert {r["method"] for r in bench["results"]} == {"ar", "sjd"}


def test_budget_cuts_steps(tmp_path):
    out = tmp_path / "gpu"
    assert cli.main([*SMALL, "--out", str(out), "--budget-s", "0.001"]) == 1
    steps = json.loads((out / "bench-gpu.json").read_text())["steps"]
    # a step that starts past the deadline is cut whole; one that starts just inside it times no cell
    assert steps[2]["status"] == steps[3]["status"] == "cut by budget"
    assert steps[1]["status"] in ("cut by budget", "0 of 4 cells (memory or budget)")


def test_gpu_test_files_are_those_that_mark_a_test_gpu(tmp_path):
    (tmp_path / "test_a.py").write_text("import pytest\n\n@pytest.mark.gpu\ndef test_x():\n    pass\n")
    (tmp_path / "test_b.py").write_text("def test_y():\n    pass\n")
    assert gpu_test_files(str(tmp_path)) == [str(tmp_path / "test_a.py")]
    assert gpu_test_files(str(tmp_path / "test_b.py")) == []
    found = {Path(f).name for f in gpu_test_files(str(REPO / "tests"))}
    assert {"test_precision.py", "test_janus.py", "test_emu3.py"} <= found
    assert "test_runner.py" not in found  # collected there, Ray would be needed


def test_revision_outside_git_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "no-repo"))  # as in a tree copied without .git
    monkeypatch.setenv("SJD_GIT_REVISION", "0123abc")
    assert git_revision() == "0123abc"
    monkeypatch.delenv("SJD_GIT_REVISION")
    assert git_revision() is None


def test_device_script_runs_without_ray_or_boto3(tmp_path):
    """infra/gpu/device-bench.sh as on a bare GPU machine, rehearsed on the CPU: neither Ray nor boto3
    can be imported (a lent machine has neither and cannot fetch them), the GPU tests are collected
    and run (skipped here, no CUDA), and the JSON records the revision given in the environment."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('ray', 'boto3', 'botocore'):\n    sys.modules[name] = None\n")
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocker),
           "WHEELS": str(tmp_path / "none"), "SJD_GIT_REVISION": "fedcba9",
           "GIT_DIR": str(tmp_path / "no-repo")}
    out = tmp_path / "gpu"
    args = [a if a != "tests/test_projection.py" else "tests" for a in SMALL[1:]]
    done = subprocess.run(["bash", str(REPO / "infra" / "gpu" / "device-bench.sh"), str(out), *args,
                           "--budget-s", "300"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no CUDA device" in done.stdout
    summary = json.loads((out / "bench-gpu.json").read_text())
    assert summary["git"] == "fedcba9"
    tests = json.loads((out / "tests.json").read_text())
    assert tests["status"] == "ok" and "skipped" in tests["tail"] and "error" not in tests["tail"].lower()


def test_gpu_wheels_pin_the_transformers_release_the_package_pins():
    """A bare GPU machine gets transformers from infra/gpu/wheels.txt: the same release as pyproject.toml,
    or the figures it measures would come from another transformers than every other figure."""
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(d for d in deps if d.startswith("transformers=="))
    wheels = [line.strip() for line in (REPO / "infra" / "gpu" / "wheels.txt").read_text().splitlines()]
    assert pinned in wheels
    assert any(w.startswith("pydantic==") for w in wheels)  # the job schema, absent there
