"""transformers' own generate() as the baseline on our Llama models (sjd_batch/models/blocks/hf_generate.py):
it samples the law our `ar` samples, so greedy decoding gives the same tokens, CFG included (HF mixes
log-softmaxes, we mix raw logits: the two differ by a per-row constant)."""

from __future__ import annotations

import json

import torch

import sjd_batch
from sjd_batch import cli
from sjd_batch.commands.measure import follows_layout
from sjd_batch.decoding import SamplingConfig

PROMPTS = ["a red circle", "blue square top left", "w3 w7"]


def test_greedy_generate_equals_our_ar_with_cfg():
    model = sjd_batch.load_model("tiny-random")
    assert model.default_sampling.cfg_scale > 1 and model.default_sampling.cfg_mode == "raw"
    ours = torch.stack([r.tokens for r in sjd_batch.generate(model, PROMPTS, "ar", top_k=1,
                                                             decode_images=False)])
    scale = model.default_sampling.cfg_scale
    theirs = model.hf_generate(PROMPTS, 0, SamplingConfig(top_k=1, cfg_scale=scale))
    assert torch.equal(theirs.cpu(), ours)
    unguided = model.hf_generate(PROMPTS, 0, SamplingConfig(top_k=1))
    assert not torch.equal(unguided.cpu(), ours)  # the control: guidance changes the tokens here


def test_sampled_generate_follows_the_layout_and_the_seed():
    model = sjd_batch.load_model("tiny-random")
    forced = torch.tensor(model.layout.forced)
    state = torch.random.get_rng_state()
    first = model.hf_generate(PROMPTS, 5, model.default_sampling)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert all(follows_layout(model.layout, row, forced) for row in first.cpu())
    assert torch.equal(model.hf_generate(PROMPTS, 5, model.default_sampling), first)
    assert not torch.equal(model.hf_generate(PROMPTS, 6, model.default_sampling), first)


def test_bench_times_hf_generate_on_tiny_random(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--model", "tiny-random", "--methods", "ar,hf-generate", "--prompts", "2",
                     "--batch-size", "2", "--warmup", "0", "--threads", "1", "--json", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"ar", "hf-generate"}
    hf = rows["hf-generate"]
    assert (hf["samples"], hf["nfe_mean"], hf["layout_violations"]) == (2, 73, 0) and hf["images_per_s"] > 0
