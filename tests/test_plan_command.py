"""`sjd-batch plan`: the plan, the first-run checks and the progress of an output, without running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sjd_batch import cli
from sjd_batch.config import parse_job
from sjd_batch.io.prompts import InputError
from sjd_batch.planning import check_output_outside_inputs
from tests.test_runner import save_job
from tests.test_worker import make_job, prompt_table, write_prompts


def _plan(capsys: pytest.CaptureFixture, job: Path, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(["plan", str(job), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_before_and_after_a_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_prompts(tmp_path / "in" / "a.parquet", 10)
    config = make_job([str(tmp_path / "in")], str(tmp_path / "out"), input={"shard_size": 4})
    job = save_job(config, tmp_path / "job.yaml")
    code, out, _ = _plan(capsys, job)
    assert code == 0 and "1 file(s), 10 rows, shards of 4 -> 3 shards" in out
    assert "ids: 10 checked, none repeated" in out and "output: not started" in out
    assert not (tmp_path / "out").exists()  # planning writes nothing
    from sjd_batch.runner import run_local

    run_local(config, progress=False)
    code, out, _ = _plan(capsys, job, "--json")
    report = json.loads(out)
    assert code == 0 and report["started"] and report["ids"] is None  # checked by the first run
    assert (report["committed_shards"], report["committed_rows"], report["left_rows"]) == (3, 10, 0)
    assert report["images_per_s"] > 0 and report["estimate_s"] == 0
    assert "nothing left" in _plan(capsys, job)[1]


def test_plan_reports_what_is_left_and_an_estimate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_prompts(tmp_path / "in" / "a.parquet", 8)
    config = make_job([str(tmp_path / "in")], str(tmp_path / "out"))
    from sjd_batch.runner import run_local

    run_local(config, progress=False)
    write_prompts(tmp_path / "in" / "b.parquet", prompt_table(4, start=8))  # the input changed
    code, _, err = _plan(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and "changed since" in err and "must never change between runs" in err
    (tmp_path / "in" / "b.parquet").unlink()
    # Shard 1's marker deleted by hand: the commit log still names it, until --verify repairs the log
    (tmp_path / "out" / "_commits" / "shard=00001.json").unlink()
    job = save_job(config, tmp_path / "job.yaml")
    assert "2 of 2 shards committed" in _plan(capsys, job)[1]
    code, out, _ = _plan(capsys, job, "--verify")
    assert code == 0 and "0 committed shard(s) added, 1 without a marker removed" in out
    assert "1 of 2 shards committed (4 rows); left: 1 shards, 4 rows" in out
    assert "images/s per actor (measured on the committed shards)" in out
    assert "1 of 2 shards committed" in _plan(capsys, job)[1]  # the log stays repaired


def test_plan_refuses_what_run_refuses(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_prompts(tmp_path / "in" / "a.parquet", 3)
    b = write_prompts(tmp_path / "in" / "b.parquet", prompt_table(3, start=2))
    code, _, err = _plan(capsys, save_job(make_job([a, b], str(tmp_path / "out")), tmp_path / "job.yaml"))
    assert code == 2 and "'p0002' at" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("inputs", "output", "inside"), [
    (["s3://b/in/"], "s3://b/in/out", True),
    (["s3://b/in"], "s3://b/in", True),
    (["s3://b/in"], "s3://b/input-2/out", False),  # a longer name is not inside
    (["s3://b/in/x.parquet"], "s3://b/in/out", False),  # a single file
    (["s3://b"], "s3://b/out", True),
    (["/data/prompts"], "/data/prompts/run-1", True),
    (["/data/prompts"], "/data/prompts-out", False),
])
def test_output_inside_an_input_prefix(inputs: list[str], output: str, inside: bool) -> None:
    config = parse_job({"name": "t", "model": {"name": "tiny-random"}, "input": {"uris": inputs},
                        "output": {"uri": output}})
    if inside:
        with pytest.raises(InputError, match="is inside the input prefix"):
            check_output_outside_inputs(config)
    else:
        check_output_outside_inputs(config)
