"""Outputs no job may write to are refused by `sjd-batch run` before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sjd_batch import cli
from tests.test_worker import make_job, write_prompts


@pytest.fixture
def job(tmp_path: Path) -> Path:
    config = make_job([write_prompts(tmp_path / "in" / "a.parquet", 2)], str(tmp_path / "a"))
    path = tmp_path / "job.yaml"
    path.write_text(config.to_yaml())
    return path


def run(capsys: pytest.CaptureFixture, job: Path, output: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["run", str(job), "--local", "--no-progress", "--set", f"output.uri={output}"])
    return code, capsys.readouterr().err


def test_the_filesystem_root_is_refused(job: Path, capsys: pytest.CaptureFixture) -> None:
    before = set(os.listdir("/"))
    code, err = run(capsys, job, "/")
    assert code == 2 and "output.uri '/' is the filesystem root" in err and "Traceback" not in err
    assert set(os.listdir("/")) == before  # no job.json, images/ or _probe/ in /


def test_an_output_inside_another_jobs_stats_folder_is_refused(job: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    assert run(capsys, job, str(tmp_path / "a"))[0] == 0
    stats = tmp_path / "a" / "stats"
    listing = sorted(p.relative_to(stats) for p in stats.rglob("*"))
    code, err = run(capsys, job, str(stats / "nested"))
    assert code == 2 and f"{tmp_path / 'a' / 'job.json'} exists" in err
    assert sorted(p.relative_to(stats) for p in stats.rglob("*")) == listing  # nothing written there


def test_one_slash_s3_is_refused_not_a_local_folder(job: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run(capsys, job, "s3:/bucket/out")
    assert code == 2 and "expected s3://... (two slashes)" in err
    assert not (tmp_path / "s3:").exists()
