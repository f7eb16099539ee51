"""No method emits a token outside the support of the sampling law.

Every generated token is scored against its teacher-forced law (`decoding/score.py`): P(x) = 0 means
plain AR could never have produced it. The old exponential race did, about once per 10^3 images on a
real vocabulary (u rounded to 1.0; see `test_rng.py`). A tiny model runs by default; the shipped
`shapes-t2i` (top-p 0.8, so most codes have probability 0 at every step) over 256 images per method
is marked slow.
"""

from __future__ import annotations

import pytest
import torch

import sjd_batch
from sjd_batch.decoding import SamplingConfig, decode, resolve_method
from sjd_batch.decoding.score import score_sequences, teacher_forced_laws
from tests.decoding.toys import PROMPTS, seeds_for

METHODS = [
    ("ar", {}),
    ("sjd", {}),
    ("sjd-vp", {"vp_lambda": 1.0}),
    ("mc-sjd", {}),
    ("mc-sjd", {"coupling": "gumbel", "init": "vertical"}),
    ("sjd-pac", {}),
    ("sjd-pac", {"coupling": "gumbel"}),
    ("sjd-vp", {"vp_lambda": 2.0, "vp_lossy": True}),  # lossy, but still inside the support
]


def _off_support(model, prompts, sampling, method, overrides, batch):
    free = torch.tensor(model.layout.forced) < 0
    total = 0
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        prefix = model.encode(chunk, None, with_uncond=sampling.uses_cfg)
        seeds = seeds_for([f"{method}-{start + i}" for i in range(len(chunk))])
        tokens = decode(model, prefix, seeds, sampling, resolve_method(method, **overrides)).tokens
        laws = teacher_forced_laws(model, prefix, tokens.to(model.device), sampling)
        total += int(score_sequences(laws, tokens, free).off_support.sum())
    return total


@pytest.mark.parametrize("method,overrides", METHODS, ids=[f"{m}-{o}" for m, o in METHODS])
def test_no_off_support_token_on_a_tiny_model(small64, method, overrides):
    sampling = SamplingConfig(top_k=5, cfg_scale=2.0)  # 11 of 16 codes have probability 0 at every step
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(32)]
    assert _off_support(small64, prompts, sampling, method, overrides, batch=32) == 0


@pytest.mark.slow
@pytest.mark.parametrize("method,overrides", METHODS, ids=[f"{m}-{o}" for m, o in METHODS])
def test_no_off_support_token_on_shapes_t2i(method, overrides):
    torch.set_num_threads(2)
    model = sjd_batch.load_model("shapes-t2i")
    prompts = list(model.example_prompts(256, 7))
    assert _off_support(model, prompts, model.default_sampling, method, overrides, batch=32) == 0
