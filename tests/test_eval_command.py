"""`sjd-batch eval`: its statistics (permutation test, Fréchet distance, Wilson interval) and one real run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sjd_batch.commands.eval import add_arguments, frechet, main, tv_permutation_test, wilson


def test_permutation_test_does_not_flag_two_samples_of_one_law():
    rng = np.random.default_rng(0)
    law = rng.dirichlet(np.ones(12))
    p_values = [tv_permutation_test(rng.multinomial(50, law, size=40), rng.multinomial(50, law, size=40),
                                    permutations=200, seed=s)[1] for s in range(10)]
    assert np.mean(np.array(p_values) < 0.05) <= 0.3  # ~5% expected; 10 draws


def test_permutation_test_flags_two_laws_negative_control():
    rng = np.random.default_rng(1)
    a = rng.multinomial(50, np.full(12, 1 / 12), size=40)
    shifted = np.full(12, 1 / 12)
    shifted[0], shifted[1] = 2 / 12, 0.0
    tv, p = tv_permutation_test(a, rng.multinomial(50, shifted, size=40), permutations=200)
    assert p < 0.01 and tv > 0.05


def test_frechet_is_zero_on_itself_and_the_squared_shift_for_a_translated_set():
    x = np.random.default_rng(2).normal(size=(400, 5))
    assert frechet(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 0, 2.0, 0, 0])
    assert frechet(x, x + shift) == pytest.approx(5.0, rel=1e-6)  # same covariance: |Δμ|²


def test_wilson_interval():
    low, high = wilson(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-3)
    low, high = wilson(95, 100)
    assert low == pytest.approx(0.8883, abs=1e-3) and high == pytest.approx(0.9785, abs=1e-3)
    assert wilson(0, 0) == (0.0, 1.0)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_eval_runs_methods_side_by_side_on_the_shipped_model(capsys):
    args = _args("--prompts", "4", "--methods", "ar,sjd,sjd:init=vertical", "--permutations", "50",
                 "--batch-size", "4", "--caption-seed", "5", "--cfg-scale", "4.0", "--json")
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["caption_seed"] == 5 and out["sampling"] == {"cfg_scale": 4.0}
    ar, sjd, vertical = (out["methods"][m] for m in ("ar", "sjd", "sjd:init=vertical"))
    assert ar["step_compression"] == 1.0 and sjd["step_compression"] > 1.0
    assert vertical["step_compression"] != sjd["step_compression"]  # the parameter reached the decoder
    for row in (ar, sjd, vertical):
        assert row["adherence_low"] <= row["adherence"] <= row["adherence_high"]
        assert row["adherence"] <= min(row["color_ok"], row["shape_ok"], row["cells_ok"])
        assert 0 < row["p_codes"] <= 1 and 0 < row["p_attributes"] <= 1
    # the tests compare with AR at an independent seed, so even AR's own row is a real comparison
    assert out["test_seed"] == 1 and ar["tv_codes"] > 0 and ar["frechet_cells"] > 0


def test_eval_refuses_a_test_seed_equal_to_the_job_seed(capsys):
    assert main(_args("--prompts", "2", "--seed", "3", "--test-seed", "3")) == 2
    assert "--test-seed must differ from --seed" in capsys.readouterr().err


def test_permutation_test_is_paired():
    with pytest.raises(ValueError, match="one row per caption"):
        tv_permutation_test(np.ones((3, 4)), np.ones((2, 4)), permutations=10)
    # Captions differ a lot, and both sides have the same captions: pairing keeps that out of the null.
    rng = np.random.default_rng(3)
    laws = rng.dirichlet(np.full(12, 0.2), size=40)
    a = np.stack([rng.multinomial(50, law) for law in laws])
    b = np.stack([rng.multinomial(50, law) for law in laws])
    assert tv_permutation_test(a, b, permutations=200)[1] > 0.01
