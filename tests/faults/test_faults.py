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
import time
from pathlib import Path

import pytest

from sjd_batch.io import layout
from sjd_batch.io.backends import open_storage
from tests.faults.conftest import context, ray_logs_leak
from tests.faults.harness import Driver, Trial, job_yaml, plan_trial, verify, write_prompts
from tests.faults.trials import record, run_trial
from tests.s3_faults import OutageProxy

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


@pytest.mark.s3
def test_a_long_s3_outage_ends_in_a_summary_and_resumes(tmp_path: Path, s3_endpoint: str, bucket: str,
                                                        reference: dict[str, str]) -> None:
    """S3 goes down for good once a shard has committed. The run ends (exit 1, no traceback) with a
    summary: what is committed, what could not be recorded, and that rerunning the same command resumes.
    Committed shards stay exactly as they were, and the rerun, with S3 back, completes the job."""
    trial = Trial(seed=77, fault="s3-outage", backend="s3", fmt="png", prompts=8, shard_size=2, batch_size=2,
                  ray=False, kill_after=0, max_attempts=2)
    job = tmp_path / "job.yaml"
    prompts = write_prompts(open_storage(f"s3://{bucket}/in"), "prompts.parquet", trial.prompts)
    job.write_text(job_yaml(trial, prompts, f"s3://{bucket}/out"))
    storage = open_storage(f"s3://{bucket}/out")  # straight to the server, never through the proxy
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONUNBUFFERED="1", AWS_MAX_ATTEMPTS="2")
    with OutageProxy(s3_endpoint, seed=0, fault_share=0.0) as proxy:  # healthy until the outage
        driver = Driver(job, {**env, "AWS_ENDPOINT_URL": proxy.url}, tmp_path / "outage", local=True)
        while not storage.list(layout.COMMITS) and driver.proc.poll() is None:
            time.sleep(0.02)
        proxy.begin_outage()
        code = driver.wait()
        committed = {k: storage.read_bytes(k) for k in storage.list(layout.COMMITS)}
        said = (tmp_path / "outage.out").read_text() + (tmp_path / "outage.err").read_text()
        assert proxy.failed > 0 and committed, said
    assert code == 1 and "Traceback" not in said, said
    assert f"{len(committed)} of 4 shards are committed" in said, said
    assert f"rerun the same command (sjd-batch run {job}" in said and "resumes" in said, said
    assert "could not record" in said, said  # the failure records for `status` were lost, and it says so
    rerun = Driver(job, {**env, "AWS_ENDPOINT_URL": s3_endpoint}, tmp_path / "rerun", local=True)
    assert rerun.wait() == 0, (tmp_path / "rerun.err").read_text()
    assert f"{len(committed)} already committed" in (tmp_path / "rerun.out").read_text()
    assert {k: storage.read_bytes(k) for k in committed} == committed  # never rewritten
    assert verify(storage, trial, reference) == trial.prompts


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
