"""The fault-injection suite (see harness.py for what a trial does and checks).

Default run: a smoke of two cheap trials (`--local` drivers: a killed driver on a local folder, an S3
outage on the real SeaweedFS server). Long mode, `-m faults`: `SJD_FAULT_TRIALS` randomized trials
(default 50) cycling through every fault, half of them on the Ray cluster; each trial's outcome is
appended as a JSON line to `SJD_FAULT_REPORT` (default: faults.jsonl in the session's temp folder),
which docs/reliability.md summarizes:

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/faults -m faults -q
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.faults.conftest import context, ray_logs_leak
from tests.faults.harness import Trial, plan_trial
from tests.faults.trials import record, run_trial

TRIALS = int(os.environ.get("SJD_FAULT_TRIALS", "50"))


def _report_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(os.environ.get("SJD_FAULT_REPORT") or tmp_path_factory.getbasetemp() / "faults.jsonl")


@pytest.mark.s3
@pytest.mark.parametrize("fault", ["kill-driver", "s3-outage"])
def test_fault_smoke(fault: str, tmp_path: Path, s3_endpoint: str, bucket: str,
                     reference: dict[str, str]) -> None:
    trial = Trial(seed=1000 + len(fault), fault=fault, backend="local" if fault == "kill-driver" else "s3",
                  fmt="png", prompts=6, shard_size=2, batch_size=2, ray=False, kill_after=3, max_attempts=2)
    outcome = run_trial(trial, context(tmp_path, s3_endpoint, bucket, reference, None))
    assert outcome.samples == 6 and outcome.exits[-1] == 0


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.s3
@pytest.mark.parametrize("seed", range(TRIALS))
def test_fault_trial(seed: int, tmp_path: Path, s3_endpoint: str, bucket: str, reference: dict[str, str],
                     fault_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    trial = plan_trial(seed)
    outcome = run_trial(trial, context(tmp_path, s3_endpoint, bucket, reference, fault_cluster))
    record(outcome, _report_path(tmp_path_factory))
    assert outcome.samples == trial.prompts


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.ray
def test_no_credential_in_ray_logs(fault_cluster: str) -> None:
    """After the trials (it runs last in the module): no Ray log file holds the S3 secret."""
    assert not ray_logs_leak(os.environ["AWS_SECRET_ACCESS_KEY"])
