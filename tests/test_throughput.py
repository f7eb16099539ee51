"""The one images/s (`sjd_batch/throughput.py`): the run summary, `stats` and `report` give the same figure
for the same output, and it counts images (not refused rows) over the shards' span."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from sjd_batch import cli, throughput
from sjd_batch.driver import run_local
from sjd_batch.io import results
from sjd_batch.io.backends import open_storage
from sjd_batch.report.data import load_job, summarize
from tests.test_worker import make_job, write_prompts


def test_span_is_per_job_and_summed() -> None:
    jobs = {"a": [(10.0, 12.0), (11.0, 15.0)], "b": [(100.0, 101.0), (None, 200.0)]}
    assert throughput.span_seconds(jobs["a"]) == 5.0
    assert throughput.jobs_seconds(jobs) == 6.0  # 5 + 1: the gap between the jobs does not count
    assert throughput.jobs_seconds({"a": [(None, 3.0)]}) is None
    assert throughput.images_per_s(12, 6.0) == 2.0
    assert throughput.images_per_s(12, 0.0) is None and throughput.images_per_s(3, None) is None


def test_summary_stats_and_report_agree(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    long = " ".join(["word"] * 500)  # tiny-random takes at most 64 prompt tokens: one refused row
    ids = [f"p{i}" for i in range(7)]
    prompts = write_prompts(tmp_path / "in" / "p.parquet",
                            pa.table({"id": ids, "prompt": ["a red circle"] * 3 + [long] + ["a cross"] * 3}))
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 4})
    summary = run_local(config, progress=False)
    assert summary.ok and summary.generated == 6 and summary.failed_samples == 1, summary.text()
    markers = results.committed_shards(open_storage(config.output.uri)).values()
    span = max(m["finished_at"] for m in markers) - min(m["started_at"] for m in markers)
    assert summary.images_per_s == pytest.approx(6 / span, rel=1e-9)  # 6 images, not 7 rows
    capsys.readouterr()
    assert cli.main(["stats", config.output.uri, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"]["samples"] == 7
    assert stats["total"]["images_per_s"] == pytest.approx(summary.images_per_s, rel=1e-9)
    (group,) = summarize([load_job(config.output.uri)], "job_id")
    assert group.images_per_s == pytest.approx(summary.images_per_s, rel=1e-9)
    assert f"{summary.images_per_s:.2f} images/s" in summary.text()
