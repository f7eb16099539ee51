"""The shipped textures-t2i: loads offline under its own name, follows its captions, and samples image
tokens from wide laws (the property it exists for), while shapes-t2i's laws stay narrow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sjd_batch import calibration as cal
from sjd_batch import generate, load_model
from sjd_batch.models.shapes import ASSETS_TEXTURES
from sjd_batch.models.shapes.model import load_tokenizer
from sjd_batch.models.shapes.tokenizer import psnr
from sjd_batch.training.shapes.checker import check
from sjd_batch.training.textures.data import make_batch
from tests.models.test_shapes import PROMPTS  # the same caption grammar

EXACT_MIN = 0.6  # of PROMPTS x 2 seeds; the model card measures about 0.9 on held-out captions


@pytest.fixture(scope="module")
def model():
    return load_model("textures-t2i")


def test_loads_under_its_own_name_with_its_codebook(model):
    assert model.name == "textures-t2i" and model.vocab.num_codes == 4096 and model.layout.length == 273
    tokenizer = load_tokenizer(ASSETS_TEXTURES)
    pixels = torch.from_numpy(make_batch(999, 0, 32)[0])
    assert psnr(pixels, tokenizer.decode(tokenizer.encode(pixels))) > 29.0  # measured 30.1 dB


def test_generate_follows_the_prompts(model):
    ok = []
    for seed in (0, 1):
        results = generate(model, PROMPTS, method="ar", seed=seed, batch_size=8)
        ok += [check(r.pixels.numpy(), p).ok for r, p in zip(results, PROMPTS, strict=True)]
    assert np.mean(ok) >= EXACT_MIN, ok


def test_image_token_laws_are_wide_here_and_narrow_on_shapes(model):
    """The calibration's entropy on a few AR samples: wide for textures-t2i, narrow for shapes-t2i
    (the negative control, so the statistic can fail)."""
    entropies = {}
    for m in (model, load_model("shapes-t2i")):
        results = generate(m, PROMPTS[:4], method="ar", seed=0, batch_size=4, decode_images=False)
        tokens = torch.stack([r.tokens for r in results])
        laws = cal.forced_laws(m, PROMPTS[:4], tokens, m.default_sampling, raw=False)
        entropies[m.name] = float(cal.law_stats(laws, cal.image_offsets(m)).entropy.mean())
    assert entropies["textures-t2i"] > 3.5 and entropies["shapes-t2i"] < 1.0, entropies
