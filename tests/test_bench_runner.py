"""`sjd-batch bench-runner`: the figures it derives from commit markers, and a run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sjd_batch import cli
from sjd_batch.commands.bench_runner import _held_s


def test_held_seconds_are_the_union_of_an_actors_overlapping_shards() -> None:
    commits = [
        {"actor": "a", "started_at": 0.0, "finished_at": 4.0},
        {"actor": "a", "started_at": 3.0, "finished_at": 6.0},  # overlaps the first: 6 s held, not 7
        {"actor": "a", "started_at": 8.0, "finished_at": 9.0},  # after a 2 s gap
        {"actor": "b", "started_at": 1.0, "finished_at": 2.0},
    ]
    assert _held_s(commits) == pytest.approx(6.0 + 1.0 + 1.0)


@pytest.mark.ray
def test_bench_runner_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "runner.json"
    code = cli.main(["bench-runner", "--samples", "12", "--actors", "1,1", "--shard-size", "4",
                     "--batch-size", "2", "--direct", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert [r["actors"] for r in report["runs"]] == [1, 1]  # a repeated count runs again, fresh
    for run in report["runs"]:
        assert run["ok"] and run["samples"] == 12 and run["model_s"] > 0
        assert run["vs_direct"] > -1 and run["between"] >= -1e-9
    assert report["direct"]["s_per_sample"] > 0
