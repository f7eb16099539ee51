"""`sjd-batch bench-modes`: both engine modes on the same prompts, the same tokens, figures written."""

from __future__ import annotations

import json

import pytest

from sjd_batch.cli import main
from sjd_batch.commands import bench_modes
from sjd_batch.models.loading import load_model


def test_bench_modes_writes_a_speedup_per_method(tmp_path, capsys):
    out = tmp_path / "modes.json"
    code = main(["bench-modes", "--model", "tiny-random", "--methods", "ar,sjd", "--round", "2",
                 "--rounds", "2", "--threads", "1", "--json", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert [r["method"] for r in data["results"]] == ["ar", "sjd"]
    for row in data["results"]:
        low, high = row["speedup_95"]
        assert 0 < low <= row["speedup"] <= high
        assert row["engine_overhead_plain"] >= 1 and row["engine_overhead_inference"] >= 1
    assert data["meta"]["command"].startswith("sjd-batch bench-modes")
    assert "speed-up from inference mode" in capsys.readouterr().out


def test_bench_modes_refuses_modes_that_decode_differently(monkeypatch):
    """The token check can fail: a model whose plain mode perturbs its logits is caught."""
    model = load_model("tiny-random")
    forward = model.forward

    def skewed(*args, **kwargs):
        logits = forward(*args, **kwargs)
        return logits if not getattr(model, "plain_tensors", False) else logits.flip(-1)

    monkeypatch.setattr(model, "forward", skewed)
    args = bench_modes.argparse.Namespace(batch_size=1, round=2, rounds=1)
    prompts = ["a red circle", "a blue square"]
    with pytest.raises(RuntimeError, match="decoded differently"):
        bench_modes.measure_method(model, "ar", prompts, args)
