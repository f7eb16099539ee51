"""The slot engine: continuous batching is exact (a sample decodes bit-identically alone and in any
stream, whatever its slot and neighbours), only the final drain idles, refused requests do not stop a
stream, and the inverse-CDF draws sample the categorical law."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding import EngineStats, Request, SamplingConfig, decode_stream, resolve_method, rng
from sjd_batch.decoding.rng import sample_seed, seed_tensor
from sjd_batch.models.loading import load_model
from tests.decoding.toys import PROMPTS

SAMPLED = SamplingConfig(top_k=8, cfg_scale=2.0, temperature=0.9)


def _requests(prompts: list[str], tag: str = "s") -> list[Request]:
    return [Request(p, sample_seed(0, f"{tag}{i}"), tag=i) for i, p in enumerate(prompts)]


def _decode(model, requests, sampling, config, slots, **kw) -> dict:
    out = {f.tag: f for f in decode_stream(model, requests, sampling, config, slots, **kw)}
    assert all(f.error is None for f in out.values())
    return out


def _assert_same(a, b, label: str) -> None:
    assert torch.equal(a.tokens, b.tokens), f"{label}: tokens differ"
    assert a.stats.accept_lens == b.stats.accept_lens, f"{label}: accept lengths differ"
    assert a.stats.accepted_by_offset == b.stats.accepted_by_offset, label


@pytest.mark.parametrize("method", ["sjd", "mc-sjd-vp"])
def test_float64_toy_stream_equals_alone(small64, method):
    config = resolve_method(method, window=8)
    requests = _requests(PROMPTS * 2)  # 16 samples through 3 slots: every slot is refilled
    stream = _decode(small64, requests, SAMPLED, config, slots=3)
    fixed = _decode(small64, requests, SAMPLED, config, slots=5, schedule="fixed")
    for i in (0, 4, 9, 15):
        alone = _decode(small64, [requests[i]], SAMPLED, config, slots=1)[i]
        _assert_same(stream[i], alone, f"sample {i}, continuous")
        _assert_same(fixed[i], alone, f"sample {i}, fixed")


@pytest.fixture(scope="module")
def shapes():
    return load_model("shapes-t2i")


def test_shapes_fp32_stream_equals_alone_bit_for_bit(shapes):
    # window 16: every forward's matrix products have >= 8 rows, where this CPU's kernels are
    # row-invariant, so the claim is bit-identity, not "equal up to rounding"
    sampling, config = shapes.default_sampling, resolve_method("sjd", window=16)
    requests = _requests(shapes.example_prompts(3, 0))
    stream = _decode(shapes, requests, sampling, config, slots=2)  # sample 2 refills a freed slot
    for i in range(3):
        alone = _decode(shapes, [requests[i]], sampling, config, slots=1)[i]
        _assert_same(stream[i], alone, f"sample {i}")


def test_only_the_final_drain_idles(small64):
    config = resolve_method("sjd", window=6)
    requests = _requests(PROMPTS * 2)
    continuous, fixed = EngineStats(), EngineStats()
    _decode(small64, requests, SAMPLED, config, slots=4, counters=continuous)
    _decode(small64, requests, SAMPLED, config, slots=4, schedule="fixed", counters=fixed)
    assert continuous.prefills == fixed.prefills == len(requests)
    assert int(continuous.idle_while_pending) == 0  # a finished slot is refilled before the next forward
    assert int(fixed.idle_while_pending) > 0  # negative control: fixed batches wait for their slowest row
    assert continuous.idle_share < fixed.idle_share
    assert continuous.iterations < fixed.iterations


def test_a_refused_request_comes_back_with_its_error_and_the_stream_goes_on(small64):
    requests = _requests(["a red circle", "w " * 100, "w1 w2"])
    out = {f.tag: f for f in decode_stream(small64, requests, SAMPLED, resolve_method("sjd"), 2)}
    assert out[1].tokens is None and "100 tokens" in out[1].error
    assert out[0].error is None and out[2].error is None
    assert out[2].tokens.shape == (small64.layout.length,)


def test_schedule_is_checked(small64):
    with pytest.raises(ValueError, match="schedule"):
        list(decode_stream(small64, [], SAMPLED, resolve_method("sjd"), 2, schedule="eager"))


def test_inverse_cdf_draws_match_the_categorical_law():
    probs = torch.tensor([0.5, 0.0, 0.25, 0.15, 0.1, 0.0])
    n = 40000
    seeds = seed_tensor([sample_seed(3, str(i)) for i in range(n)])
    u = rng.uniforms(seeds, rng.AR, torch.zeros(n, 1, dtype=torch.long))[:, 0]
    draws = rng.categorical(probs.expand(n, 6), u)
    freq = torch.bincount(draws, minlength=6).double() / n
    assert freq[1] == 0 and freq[5] == 0  # zero-probability ids are never drawn
    sigma = (probs * (1 - probs) / n).sqrt().double()
    assert ((freq - probs.double()).abs() <= 5 * sigma + 1e-12).all(), freq
    # unnormalised weights give the same draws, and u near 1 stays inside the support
    assert torch.equal(rng.categorical(3 * probs.expand(n, 6), u), draws)
    edge = rng.categorical(probs[None], torch.tensor([1 - 2.0**-33], dtype=torch.float64))
    assert edge.tolist() == [4]


def test_engine_uniforms_are_distinct_per_stream_step_and_position():
    seeds = seed_tensor([sample_seed(0, "a")])
    pos = torch.arange(64)[None]
    a = rng.uniforms(seeds, rng.DRAFT, pos, torch.tensor([1]))
    assert not torch.equal(a, rng.uniforms(seeds, rng.DRAFT, pos, torch.tensor([2])))
    assert not torch.equal(a, rng.uniforms(seeds, rng.INIT, pos, torch.tensor([1])))
    assert a.unique().numel() == 64
