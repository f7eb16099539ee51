"""`generate()`: results, images and clear errors for bad arguments."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import sjd_batch
from sjd_batch.io.records import Provenance, StatsRecord
from sjd_batch.models.shapes.tiny import TinySpec, build_tiny


@pytest.fixture(scope="module")
def model():
    return sjd_batch.load_model("tiny-random")


def test_generate_returns_tokens_images_and_stats(model):
    out = sjd_batch.generate(
        model, ["a red circle", "a blue square", "x"], method="sjd-vp", seed=7, batch_size=2
    )
    assert [r.sample_id for r in out] == ["0", "1", "2"]
    layout = model.layout
    for r in out:
        assert r.tokens.shape == (layout.length,)
        forced = torch.tensor(layout.forced)
        assert torch.equal(r.tokens[forced >= 0], forced[forced >= 0])  # grammar respected
        free = r.tokens[forced < 0]
        assert ((free >= layout.image_start) & (free < layout.image_end)).all()
        assert r.image.size == (layout.width * 4, layout.height * 4)
        assert r.stats.method == "sjd-vp" and r.stats.params["vp_lambda"] == 0.5
        assert r.stats.pixel_s > 0 and r.stats.decode_s > 0


def test_sample_ids_not_position_determine_the_output(model):
    a = sjd_batch.generate(
        model, ["p", "q"], method="sjd", seed=3, sample_ids=["x", "y"], decode_images=False
    )
    b = sjd_batch.generate(model, ["q"], method="sjd", seed=3, sample_ids=["y"], decode_images=False)
    assert torch.equal(a[1].tokens, b[0].tokens)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"method": "fast"}, ValueError, "unknown method 'fast'"),
        ({"window": 1}, ValueError, "window must be >= 2"),
        ({"top_k": -1}, ValueError, "top_k must be >= 0"),
        ({"vp_lambda": -0.5}, ValueError, "vp_lambda must be >= 0"),
        ({"top_p": 0.0}, ValueError, "top_p must be in"),
        ({"init": "diagonal"}, ValueError, "init must be one of"),
        ({"windw": 8}, TypeError, "unknown parameter.*windw"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"method": "jacobi"}, ValueError, "greedy"),
    ],
)
def test_bad_arguments_get_clear_errors(model, kwargs, error, match):
    with pytest.raises(error, match=match):
        sjd_batch.generate(model, ["a prompt"], **kwargs)


def test_keyword_overrides_go_over_the_model_defaults(model):
    """generate(**params)'s road to the sampler: the model's `SamplingConfig` with the given fields
    replaced, everything else as the model declares it."""
    from sjd_batch.api import split_params

    base = dataclasses.replace(model.default_sampling, top_k=7, cfg_mode="log-softmax")
    model.default_sampling, saved = base, model.default_sampling
    try:
        sampling, method = split_params(model, "sjd", {"top_p": 0.5, "window": 4})
    finally:
        model.default_sampling = saved
    assert sampling == dataclasses.replace(base, top_p=0.5) and method.window == 4


def test_empty_prompt_list(model):
    with pytest.raises(ValueError, match="prompts is empty"):
        sjd_batch.generate(model, [])


def test_single_string_is_refused(model):
    with pytest.raises(TypeError, match="list of strings"):
        sjd_batch.generate(model, "a prompt")


def test_cfg_without_unconditional_prompt():
    model = build_tiny(TinySpec())
    model.has_uncond = False
    with pytest.raises(ValueError, match="cfg_scale=3.0 needs an unconditional prompt"):
        sjd_batch.generate(model, ["a"], cfg_scale=3.0)
    assert len(sjd_batch.generate(model, ["a"], cfg_scale=1.0, decode_images=False)) == 1


def test_too_long_prompt_names_the_prompt(model):
    with pytest.raises(ValueError, match="prompt 1 has 100 tokens"):
        sjd_batch.generate(model, ["ok", "w " * 100])


def test_unknown_model_lists_registered_ones():
    with pytest.raises(ValueError, match="registered models .*tiny-random"):
        sjd_batch.load_model("no-such-model")


def test_every_sample_statistic_reaches_the_stats_row(model):
    """What `generate` measures is what a job's stats row stores (`StatsRecord.of`), field by field."""
    r = sjd_batch.generate(model, ["a"], method="mc-sjd", window=4, decode_images=False)[0]
    where = Provenance("0", "a", None, 7, "in.parquet", 0, 0, "actor-0", "node-0", "tiny-random", "mc-sjd")
    row = StatsRecord.of(where, r.stats, "images/0.png", encode_s=0.0, upload_s=0.0, latency_s=0.0).to_json()
    stored_as = {"params": "params_json", "extra": "extra_json"}
    assert {stored_as.get(f.name, f.name) for f in dataclasses.fields(r.stats)} <= set(row)
    assert row["step_compression"] == pytest.approx(row["tokens"] / row["nfe"])
    assert sum(row["accept_lens"]) == row["tokens"]
    params = json.loads(row["params_json"])
    assert params["coupling"] == "maximal" and params["window"] == 4
