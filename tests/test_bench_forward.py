"""`sjd-batch bench-forward`: argument parsing, the latency-bound arithmetic, and a real timing run."""

from __future__ import annotations

import json

import pytest

from sjd_batch.cli import main
from sjd_batch.commands.bench_forward import ForwardTiming, latency_bounds, parse_pairs


def test_parse_pairs_and_its_error() -> None:
    assert parse_pairs("1=1,16=2.5, 64=2.84") == {1: 1.0, 16: 2.5, 64: 2.84}
    with pytest.raises(ValueError, match="'16:2.5' is not window=compression"):
        parse_pairs("16:2.5")


def test_latency_bound_is_forwards_times_forward_time() -> None:
    timings = [ForwardTiming(1, 2, 16, 100, 4.0, 0.0), ForwardTiming(1, 2, 32, 100, 8.0, 0.0)]
    bounds = latency_bounds(timings, {16: 2.0}, length=100)
    assert bounds == [{"batch": 1, "window": 16, "compression": 2.0, "forwards": 50.0, "decode_s": 0.2}]


def test_bench_forward_times_every_window_and_batch(tmp_path, capsys) -> None:
    out = tmp_path / "fwd.json"
    code = main(["bench-forward", "--model", "tiny-random", "--windows", "1,8", "--batch-sizes", "1,2",
                 "--repeats", "2", "--warmup", "1", "--compression", "1=1,8=3", "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    grid = {(t["batch"], t["window"]) for t in payload["timings"]}
    assert grid == {(1, 1), (1, 8), (2, 1), (2, 8)}
    assert all(t["median_ms"] > 0 and t["rows"] in (t["batch"], 2 * t["batch"]) for t in payload["timings"])
    assert len(payload["bounds"]) == 4 and "bound:" in capsys.readouterr().out
