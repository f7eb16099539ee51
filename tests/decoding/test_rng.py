"""Counter-based randomness: uniform, independent across streams and keys, exact categorical races."""

from __future__ import annotations

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.rng import sample_seed, seed_tensor


def test_sample_seed_is_stable_and_distinct():
    assert sample_seed(0, "a") == sample_seed(0, "a")
    assert len({sample_seed(0, str(i)) for i in range(1000)} | {sample_seed(1, "0")}) == 1001
    assert 0 <= sample_seed(0, "a") < 2**64


def test_uniforms_look_uniform_and_streams_differ():
    seeds = seed_tensor([sample_seed(0, str(i)) for i in range(2000)])
    pos = torch.arange(50).expand(2000, 50)
    u = rng.uniform(rng.key(seeds, rng.ACCEPT, pos))
    v = rng.uniform(rng.key(seeds, rng.RESIDUAL, pos))
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.01
    assert abs(torch.corrcoef(torch.stack([u.flatten(), v.flatten()]))[0, 1].item()) < 0.02
    steps = rng.uniform(rng.key(seeds, rng.DRAFT, pos, torch.ones(2000, dtype=torch.long)))
    assert not torch.equal(
        steps, rng.uniform(rng.key(seeds, rng.DRAFT, pos, torch.zeros(2000, dtype=torch.long)))
    )


def test_race_matches_the_categorical_law():
    probs = torch.tensor([0.5, 0.25, 0.15, 0.1, 0.0])
    seeds = seed_tensor([sample_seed(3, str(i)) for i in range(40000)])
    draws = rng.race(probs.expand(40000, 5), rng.key(seeds, rng.AR, torch.zeros(40000, dtype=torch.long)))
    freq = torch.bincount(draws, minlength=5).double() / 40000
    assert freq[4] == 0
    sigma = (probs * (1 - probs) / 40000).sqrt().double()
    assert ((freq - probs.double()).abs() <= 5 * sigma + 1e-12).all(), freq


def test_mix32_is_a_bijection_on_a_sample_and_stays_32_bit():
    x = torch.arange(0, 2**20, dtype=torch.int64) * 4093
    h = rng.mix32(x & rng.MASK32)
    assert h.unique().numel() == x.numel()
    assert h.min() >= 0 and h.max() < 2**32
