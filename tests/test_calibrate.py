"""`sjd-batch calibrate`: its teacher-forced laws are the decoder's laws, TV-by-distance is exact on a
Markov chain (zero beyond distance 1, not zero at 1), and the command reports every key on a tiny model."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from sjd_batch import calibration as cal
from sjd_batch.commands.calibrate import DISTANCES, WINDOWS, add_arguments, main
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs
from sjd_batch.models.loading import load_model
from tests.decoding.markov import MarkovToy

PROMPTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11 w12 w13"]  # different lengths: left padding


def _valid_tokens(model, rows: int, seed: int = 0) -> torch.Tensor:
    """Random layout-valid tokens [rows, T]: forced ids where forced, random image ids elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    layout = model.layout
    free = torch.randint(layout.image_start, layout.image_end, (rows, layout.length), generator=gen)
    forced = torch.tensor(layout.forced)
    return torch.where(forced >= 0, forced, free)


def test_forced_laws_equal_a_plain_forward_of_the_whole_sequence():
    model = load_model("tiny-random")
    tokens = _valid_tokens(model, len(PROMPTS))
    sampling = SamplingConfig(top_k=20, cfg_scale=2.0)
    laws = cal.forced_laws(model, PROMPTS, tokens, sampling, raw=True)
    grammar = Grammar(model.layout, model.vocab_size, model.device)
    offsets = torch.arange(model.layout.length)[None]
    for b, prompt in enumerate(PROMPTS):
        cond, uncond = model.tokenize(prompt), model.tokenize("")
        with torch.no_grad():
            z = [model.lm(input_ids=torch.tensor([p + tokens[b, :-1].tolist()])).logits[:, len(p) - 1 :]
                 for p in (cond, uncond)]
        want = processed_probs(torch.cat(z), offsets, grammar, sampling)[0]
        raw = processed_probs(z[0], offsets, grammar, cal.RAW)[0]
        assert torch.allclose(laws.sampled[b], want, atol=1e-5)
        assert torch.allclose(laws.raw[b], raw, atol=1e-5)


def test_law_stats_on_a_markov_chain_are_the_table_entropies():
    toy = MarkovToy(height=3, width=5, codes=6, scale=1.0)
    tokens = _valid_tokens(toy, 4, seed=1)
    laws = cal.forced_laws(toy, ["a", "bb", "ccc", "d"], tokens, toy.default_sampling, raw=True)
    offsets = cal.image_offsets(toy)
    stats = cal.law_stats(laws, offsets)
    codes = slice(toy.layout.image_start, toy.layout.image_end)
    for b in range(4):
        prompt = toy.encode(["a", "bb", "ccc", "d"][b : b + 1], None, False).ids[0, -1:]
        fed = torch.cat([prompt, tokens[b, :-1]])
        p = toy.table[fed[offsets]][:, codes].softmax(-1)
        assert stats.entropy[b] == pytest.approx(float(cal.entropy(p).mean()), rel=1e-6)
        assert stats.top1_below[b] == pytest.approx(float((p.amax(-1) < 0.05).double().mean()))


def test_tv_by_distance_is_zero_beyond_the_markov_order_and_not_at_one():
    toy = MarkovToy(height=4, width=6, codes=8, scale=2.0)  # law of j depends on token j-1 only
    prompts = [f"p{i}" for i in range(8)]
    tokens = _valid_tokens(toy, len(prompts), seed=2)
    laws = cal.forced_laws(toy, prompts, tokens, toy.default_sampling, raw=False).sampled
    tv = cal.tv_by_distance(toy, prompts, tokens, laws, toy.default_sampling, (1, 2, 3, 5), 6,
                            torch.Generator().manual_seed(0))
    assert np.nanmean(tv[1]) > 0.1  # negative control: a redrawn neighbour moves the law
    for d in (2, 3, 5):
        assert np.nanmax(tv[d]) == pytest.approx(0.0, abs=1e-12)


def test_bootstrap_ratio_is_paired_and_brackets_the_point():
    rng = np.random.default_rng(0)
    den = rng.uniform(50, 100, size=64)
    assert cal.bootstrap_ratio(den, den) == (1.0, 1.0, 1.0)  # paired: identical runs have no spread
    ratio, low, high = cal.bootstrap_ratio(2 * den + rng.normal(0, 5, size=64), den)
    assert low < ratio < high and 1.9 < ratio < 2.1


def test_accept_hist_is_a_distribution_over_window_lengths():
    counts = cal.MethodCounts(np.array([10.0]), np.array([5.0]), np.array([1, 1, 2, 4]))
    assert counts.accept_hist(4) == [0.5, 0.25, 0.0, 0.25]
    assert counts.step_compression == 2.0


def test_calibrate_reports_every_key_on_a_tiny_model(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cal.json"
    args = parser.parse_args(["--model", "tiny-random", "--prompts", "3", "--batch-size", "2",
                              "--tv-positions", "2", "--json", str(out)])
    assert main(args) == 0
    result = json.loads(out.read_text())
    for key in ("entropy_nats_mean", "entropy_raw_nats_mean", "top1_below_5pct", "mc_gain_l64",
                "vertical_gain"):
        assert np.isfinite(result[key]), key
    assert set(result["sjd_compression_by_window"]) == {str(w) for w in WINDOWS}
    assert set(result["tv_by_distance"]) == {str(d) for d in DISTANCES} and 0 <= result["tv_above"] <= 1
    assert len(result["accept_len_hist"]) == 16 and sum(result["accept_len_hist"]) == pytest.approx(1.0)
    assert all(v >= 1.0 for v in result["sjd_compression_by_window"].values())
    assert 0 <= result["top1_below_5pct"] <= 1 and result["entropy_nats_mean"] > 0
    assert result["prompts"] == 3 and result["commit"] and result["command"].startswith("sjd-batch calibrate")
    captured = capsys.readouterr()
    assert "| SJD compression, window 16 |" in captured.out
    # progress on stderr: both law batches (2 + 1 captions), then each of the six method runs
    assert "AR samples and their laws, 2/3 captions" in captured.err and "3/3 captions" in captured.err
    assert "sjd-vertical@16 on 3 captions, run 6/6" in captured.err


def test_sampling_overrides_change_the_sampled_law_only(tmp_path, capsys):
    """--top-k 1 makes every sampled law a point mass (entropy 0) while the raw law keeps its spread."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "cal.json"
    args = parser.parse_args(["--model", "tiny-random", "--prompts", "2", "--batch-size", "2",
                              "--tv-positions", "2", "--top-k", "1", "--json", str(out)])
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["sampling"]["top_k"] == 1
    assert result["entropy_nats_mean"] == pytest.approx(0.0, abs=1e-6)
    assert result["entropy_raw_nats_mean"] > 0.5  # the raw law is untouched by the override
    assert "overrides: {'top_k': 1}" in capsys.readouterr().out
