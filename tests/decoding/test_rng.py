"""Counter-based randomness: uniform, independent across streams and keys, exact categorical races."""

from __future__ import annotations

import pytest
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


# --- the race never leaves the support, whatever the dtype of the weights ------------------------

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exponentials_stay_positive_and_finite_at_the_extreme_hashes(dtype):
    bits = torch.tensor([0, 1, 2**23, 2**31, 2**32 - 512, 2**32 - 1], dtype=torch.int64)
    e = rng.exponentials(bits, dtype)
    assert (e > 0).all() and torch.isfinite(e).all(), e


@pytest.mark.parametrize("dtype", DTYPES)
def test_largest_hash_on_a_zero_weight_does_not_win(dtype):
    # The old race formed u = (bits24 + 0.5) 2^-24 in the weights' dtype: at bits24 = 2^24 - 1 it
    # rounded to 1.0 in float32, E = 0 and 0/0 = NaN won the argmax for the zero-weight index 0.
    probs = torch.tensor([[0.0, 0.5, 0.5]], dtype=dtype)
    for top in (2**32 - 1, (2**24 - 1) << 8):
        bits = torch.tensor([[top, 7 << 20, 9 << 20]], dtype=torch.int64)
        assert rng.race_bits(probs, bits).item() != 0


def _draws(probs: torch.Tensor, n: int, tag: int) -> torch.Tensor:
    """n independent race draws from one law `probs` [V]: one sample seed, n positions (in chunks)."""
    seeds, out, chunk = seed_tensor([sample_seed(tag, "draws")]), [], 1 << 16
    for start in range(0, n, chunk):
        pos = torch.arange(start, min(n, start + chunk))[None]
        out.append(rng.race(probs.expand(1, pos.shape[1], -1), rng.key(seeds, rng.AR, pos))[0])
    return torch.cat(out)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES[:3])
def test_a_million_draws_never_return_a_zero_weight_index(dtype):
    # 128 zero-weight codes x 10^6 draws: the old race hit u = 1.0 about 7.6 times in float32 (it
    # passed with probability e^-7.6 < 0.1%), and far more often in bfloat16 and float16.
    probs = torch.zeros(256, dtype=dtype)
    probs[1::2] = 1.0 / 128
    draws = _draws(probs, 1_000_000, tag=11)
    assert (draws % 2 == 1).all(), f"{int((draws % 2 == 0).sum())} zero-weight draws"


@pytest.mark.parametrize("dtype", DTYPES[:3])
def test_race_in_half_precision_is_the_categorical_law(dtype):
    # Uniform on half of 2,048 codes. The old race in float16 overflowed hashes above 65,504 to inf
    # (chi^2 ~ 7,840); in bfloat16 it returned a zero-weight code 87% of the time.
    probs = torch.zeros(2048, dtype=dtype)
    probs[::2] = 1.0 / 1024
    n = 20_000
    draws = _draws(probs, n, tag=12)
    assert (draws % 2 == 0).all(), f"{int((draws % 2 == 1).sum())} zero-weight draws"
    counts = torch.bincount(draws // 2, minlength=1024).double()
    expected = n / 1024
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # chi^2 with 1023 dof: mean 1023, sd 45; 1023 + 6 sd ~ 1294 (false-alarm rate ~ 1e-9)
    assert chi2 < 1294, chi2


def test_ar_uniform_table_holds_the_per_offset_draws():
    """Plain AR looks its uniforms up in a table hashed at refill: every column must be the draw of
    (sample, AR, offset) itself, and the padding column must not break a finished slot's lookup."""
    from sjd_batch.decoding.jacobi import ar_uniforms

    seeds = seed_tensor([sample_seed(3, str(i)) for i in range(5)])
    table = ar_uniforms(seeds, 40)
    assert table.shape == (5, 41) and table.dtype == torch.float64
    for n in (0, 1, 17, 39):
        one = rng.uniforms(seeds, rng.AR, torch.full((5, 1), n))[:, 0]
        assert torch.equal(table[:, n], one)
    assert not torch.equal(table[:, 0], table[:, 1])
