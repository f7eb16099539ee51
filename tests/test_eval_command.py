"""`sjd-batch eval`: its statistics (permutation test, Fréchet distance, Wilson interval) and one real run."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from sjd_batch.commands.eval import (
    add_arguments,
    frechet,
    main,
    mean_test,
    sign_flip_test,
    tv_permutation_test,
    wilson,
)


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
        assert 0 <= row["p_nll_gap"] <= 1 and 0 < row["p_nll_gap_vs_ar"] <= 1 and row["nll_gap_se"] > 0
        assert row["off_support"] == 0
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


# --- the model-based test: NLL gap ---------------------------------------------------------------


def test_mean_and_sign_flip_tests_are_calibrated_and_have_power():
    rng = np.random.default_rng(5)
    null_p = [mean_test(rng.normal(0, 1, 64))[2] for _ in range(400)]
    assert 0.0 < np.mean(np.array(null_p) < 0.05) < 0.1  # ~5% false alarms at 0.05
    assert mean_test(rng.normal(0.5, 1, 64))[2] < 1e-3  # a shift of half a standard deviation
    flips = [sign_flip_test(rng.normal(0, 1, 64), 200, seed=s) for s in range(100)]
    assert np.mean(np.array(flips) < 0.05) < 0.15
    assert sign_flip_test(rng.normal(0.6, 1, 64), 500) < 0.01


def test_nll_gap_is_centred_for_exact_samples_and_flags_a_colder_sampler():
    # AR samples of a small random model, scored against its own law: the per-image gaps have mean 0
    # (t-test p > 0.001, a 0.1% false-alarm rate); the same model sampled at temperature 0.7 and
    # scored against the temperature-1 law must be flagged (p < 1e-4).
    import torch

    from sjd_batch.decoding import SamplingConfig, decode, resolve_method
    from sjd_batch.decoding.score import score_sequences, teacher_forced_laws
    from sjd_batch.models.shapes.tiny import TinySpec, build_tiny
    from tests.decoding.toys import seeds_for

    model = build_tiny(TinySpec(logit_scale=6.0), dtype=torch.float32)
    prompts = [f"w{i % 9} w{i % 5}" for i in range(128)]
    prefix = model.encode(prompts, None, with_uncond=False)
    seeds = seeds_for([str(i) for i in range(len(prompts))])
    law, free = SamplingConfig(top_k=20), torch.tensor(model.layout.forced) < 0
    ps = {}
    for temperature in (1.0, 0.7):
        sampling = SamplingConfig(top_k=20, temperature=temperature)
        tokens = decode(model, prefix, seeds, sampling, resolve_method("ar")).tokens
        score = score_sequences(teacher_forced_laws(model, prefix, tokens, law), tokens, free)
        assert int(score.off_support.sum()) == 0
        ps[temperature] = mean_test(score.nll_gap.double().numpy())[2]
    assert ps[1.0] > 1e-3 and ps[0.7] < 1e-4, ps


LOSSLESS = [
    "sjd", "mc-sjd", "mc-sjd:coupling=gumbel", "sjd-pac", "sjd-pac:coupling=gumbel", "sjd-vp:vp_lambda=1.0"
]
CONTROLS = ["ar:temperature=0.85", "sjd-vp:vp_lossy=true:vp_lambda=2.0"]


@pytest.mark.slow
@pytest.mark.timeout(2400)  # ten decodes of 64 captions on shapes-t2i, then their scores: minutes on 2 cores
def test_nll_gap_flags_both_controls_and_passes_every_lossless_method_at_the_default_size(capsys):
    # eval's default sample: 64 held-out captions. Controls must reach p < 0.01; each lossless method
    # must keep p > 0.001 (a 0.1% false-alarm rate per method, about 0.6% for the six together).
    args = _args("--methods", ",".join(["ar", *CONTROLS, *LOSSLESS]), "--json")
    assert args.prompts == 64
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)["methods"]
    with capsys.disabled():  # the figures, for the record (shown with -s)
        for label, row in rows.items():
            print(f"{label}: nll_gap {row['nll_gap']:+.4f} ± {row['nll_gap_se']:.4f}, "
                  f"p {row['p_nll_gap']:.2g}, p vs ar {row['p_nll_gap_vs_ar']:.2g}")
    # The controls are flagged by the gap's test against 0 (the statistic of record). The paired test
    # against the second AR run carries AR's own noise as well and is weaker: on 2026-12-05 it gave
    # p 0.0005 for the colder sampler but 0.069 for lossy SJD-VP (gap test: 6e-23 and 0.005), so it is
    # printed, not asserted, for the controls.
    for label in CONTROLS:
        assert rows[label]["p_nll_gap"] < 0.01, (label, rows[label])
    for label in ["ar", *LOSSLESS]:
        assert rows[label]["p_nll_gap"] > 1e-3, (label, rows[label])
        assert rows[label]["p_nll_gap_vs_ar"] > 1e-3, (label, rows[label])
    assert all(row["off_support"] == 0 for row in rows.values())
