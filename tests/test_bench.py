"""`sjd-batch bench`: engine overhead, schedules, rounds with 95% intervals, and the forward timer."""

from __future__ import annotations

import json

import pytest

from sjd_batch import cli
from sjd_batch.commands.measure import ForwardTimer, ratio_interval
from sjd_batch.models.loading import load_model


def test_ratio_interval_is_a_student_t_interval():
    mean, lo, hi = ratio_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hi - mean == pytest.approx(4.30 * 1.0 / 3**0.5)  # t(0.975, df=2) * sd / sqrt(n)
    assert ratio_interval([1.5]) == (1.5, 1.5, 1.5)


def test_forward_timer_counts_calls_and_restores_the_model():
    model = load_model("tiny-random")
    import sjd_batch

    with ForwardTimer(model) as timer:
        sjd_batch.generate(model, ["a"], "sjd", window=8, decode_images=False)
    assert timer.calls >= 2 and timer.seconds > 0  # the prefill and at least one window
    assert "forward" not in vars(model)  # the class method is back
    assert timer.decode_calls == timer.calls - 1  # every forward but the prefill decodes
    assert timer.tokens_per_forward == 8  # a chain feeds its whole window each forward


def test_tokens_per_forward_shows_the_cost_of_a_draft_tree():
    model = load_model("tiny-random")
    import sjd_batch

    widths = {}
    for method in ("ar", "sjd-pac"):
        with ForwardTimer(model) as timer:
            sjd_batch.generate(model, ["a"], method, window=8, decode_images=False)
        widths[method] = timer.tokens_per_forward
    assert widths["ar"] == 1
    assert widths["sjd-pac"] > 8, widths  # the tree's nodes ride in the same forward as the chain


def test_bench_reports_overhead_idle_share_and_intervals(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", "tiny-random", "--methods", "ar,sjd:window=6", "--prompts", "8",
                     "--batch-size", "2", "--round", "4", "--warmup", "0", "--schedule", "continuous,fixed",
                     "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {(r["method"], r["schedule"]): r for r in data["results"]}
    assert set(rows) == {(m, s) for m in ("ar", "sjd:window=6") for s in ("continuous", "fixed")}
    for r in rows.values():
        assert r["rounds"] == 2 and r["samples"] == 8
        assert r["engine_overhead"] > 1.0  # wall includes every forward, and the engine around them
        lo, hi = r["images_per_s_vs_ar_95"]
        assert lo <= r["images_per_s_vs_ar"] <= hi
    sjd_c, sjd_f = rows["sjd:window=6", "continuous"], rows["sjd:window=6", "fixed"]
    assert sjd_c["idle_share_before_drain"] == 0.0  # a free slot is refilled before the next forward
    assert sjd_f["idle_share_before_drain"] > 0.0  # fixed batches wait for their slowest row
    assert sjd_c["nfe_mean"] == sjd_f["nfe_mean"]  # same samples, same forwards: only the schedule differs
    lo, hi = sjd_c["images_per_s_vs_fixed_95"]
    assert lo <= sjd_c["images_per_s_vs_fixed"] <= hi and "images_per_s_vs_fixed" not in sjd_f
    lo, hi = sjd_c["engine_overhead_95"]
    assert len(sjd_c["images_per_s_by_round"]) == 2 and lo <= sjd_c["engine_overhead"] <= hi
    assert rows["ar", "continuous"]["idle_share"] == 0.0  # AR rows all finish together
    assert rows["ar", "continuous"]["tokens_per_forward"] == 1 and sjd_c["tokens_per_forward"] == 6
    assert data["meta"]["command"].startswith("sjd-batch bench") and "git" in data["meta"]
    printed = capsys.readouterr()
    assert "tok/fwd" in printed.out
    progress = [line for line in printed.err.splitlines() if line.startswith("round ")]
    assert [line.split(":")[0] for line in progress] == ["round 1/2", "round 2/2"]
    assert "sjd:window=6 fixed" in progress[-1]


def test_op_counter_separates_the_model_from_the_engine_around_it():
    """OpCounter counts top-level torch operators per forward, inside `model.forward` and around it,
    exactly (nested operators are not counted twice), and restores the model afterwards."""
    import torch

    from sjd_batch.timing import OpCounter

    class Model:
        def forward(self, x):
            return torch.relu(x + 1).sum()  # three operators (sum's internals are nested, not counted)

    model, x = Model(), torch.ones(4)
    with OpCounter(model) as ops:
        for _ in range(2):
            y = model.forward(x)
            torch.mul(y, 2).neg()  # two operators around each forward
    assert "forward" not in vars(model)
    assert ops.forwards == 2 and ops.per_forward() == {"model": 3.0, "around": 2.0}


@pytest.mark.slow
def test_bench_ops_counts_more_engine_operators_around_speculation(tmp_path, capsys):
    """`bench --ops` on a real engine: the same model operators for ar and sjd at one batch size, and
    more around an sjd forward (verify, redraft, statistics) than around an AR one. Slow: the profiler
    records every operator of the run."""
    path = tmp_path / "ops.json"
    assert cli.main(["bench", "--model", "tiny-random", "--methods", "sjd:window=8", "--prompts", "1",
                     "--warmup", "0", "--threads", "1", "--ops", "--json", str(path)]) == 0
    assert "torch operators per forward in the model" in capsys.readouterr().out
    out = {r["method"]: r["ops_per_forward"] for r in json.loads(path.read_text())["results"]}
    assert out["sjd:window=8"]["around"] > 1.5 * out["ar"]["around"], out
    assert abs(out["sjd:window=8"]["model"] - out["ar"]["model"]) < 0.25 * out["ar"]["model"], out
