"""The processed distribution P: CFG variants, grammar, temperature, top-k, top-p."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding.protocol import Layout
from sjd_batch.decoding.sampling import (
    Grammar,
    SamplingConfig,
    cfg_combine,
    drop_value,
    kth_largest,
    processed_probs,
    warp,
)

LAYOUT = Layout(height=1, width=2, forced=(-1, -1, 1), image_start=2, image_end=6, row_stride=3)


def test_raw_and_log_softmax_cfg_give_the_same_p():
    logits = torch.randn(4, 3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    raw = cfg_combine(logits, 3.0, "raw").softmax(-1)
    lsm = cfg_combine(logits, 3.0, "log-softmax").softmax(-1)
    torch.testing.assert_close(raw, lsm)
    assert not torch.allclose(raw, logits[:2].softmax(-1))  # guidance changed something


def test_grammar_forces_tokens_and_masks_non_image_ids():
    g = Grammar(LAYOUT, vocab=6, device=torch.device("cpu"))
    logits = torch.zeros(1, 3, 6)
    p = processed_probs(logits, torch.tensor([[0, 1, 2]]), g, SamplingConfig())
    assert torch.equal(p[0, 2], torch.tensor([0, 1.0, 0, 0, 0, 0]))  # the forced EOL slot
    assert torch.allclose(p[0, 0], torch.tensor([0, 0, 0.25, 0.25, 0.25, 0.25]))
    # offsets past the layout end read as free image slots
    assert (g.forced_at(torch.tensor([5, 2, 99])) == torch.tensor([-1, 1, -1])).all()


def test_masking_after_cfg_avoids_nan_on_forced_slots():
    g = Grammar(LAYOUT, vocab=6, device=torch.device("cpu"))
    logits = torch.full((2, 1, 6), -1e4)
    p = processed_probs(logits, torch.tensor([[2]]), g, SamplingConfig(cfg_scale=5.0))
    assert torch.equal(p[0, 0], torch.tensor([0, 1.0, 0, 0, 0, 0]))


def test_top_k_keeps_k_and_ties_and_top_p_keeps_the_nucleus():
    z = torch.tensor([[3.0, 2.0, 2.0, 1.0, 0.0]])
    low = drop_value(torch.float32)
    warped = warp(z, SamplingConfig(top_k=2))
    assert (warped <= low).tolist() == [[False, False, False, True, True]]
    assert torch.equal(warped[:, :3], z[:, :3]) and warped.softmax(-1)[0, 3:].tolist() == [0.0, 0.0]
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = warp(p, SamplingConfig(top_p=0.8)) > low
    assert kept.tolist() == [[True, True, False, False]]
    kept = warp(p, SamplingConfig(top_p=0.81)) > low
    assert kept.tolist() == [[True, True, True, False]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "k"), [((256, 4267), 1000), ((3, 7, 50), 1), ((5, 50), 50), ((4, 10), 3)])
def test_kth_largest_is_topks_last_value(shape, k, dtype):
    """The CPU selection path gives exactly torch.topk's k-th value, ties included (the top-k law
    of every method depends on it, so a difference would change what is sampled)."""
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(k)).to(dtype)
    z[..., : min(5, shape[-1])] = 0.25  # a run of equal values that a cut can fall into
    z[..., -3:] = torch.tensor([7.0, 7.0, 7.0], dtype=dtype)[: min(3, shape[-1])]
    assert torch.equal(kth_largest(z, k), torch.topk(z, k, dim=-1).values[..., -1:])


def test_temperature_sharpens_and_zero_is_greedy():
    g = Grammar(LAYOUT, vocab=6, device=torch.device("cpu"))
    logits = torch.tensor([[[0, 0, 1.0, 2.0, 0, 0]]])
    off = torch.tensor([[0]])
    hot = processed_probs(logits, off, g, SamplingConfig(temperature=2.0))
    cold = processed_probs(logits, off, g, SamplingConfig(temperature=0.5))
    greedy = processed_probs(logits, off, g, SamplingConfig(temperature=0.0))
    assert cold[0, 0, 3] > hot[0, 0, 3]
    assert greedy[0, 0].tolist() == [0, 0, 0, 1.0, 0, 0]


@pytest.mark.parametrize(
    "kwargs,match",
    [({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p"), ({"cfg_mode": "mean"}, "cfg_mode")],
)
def test_bad_sampling_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


def _reference_probs(logits, offsets, grammar, config):
    """processed_probs written the plain way (masked_fill with -inf, out-of-place CFG, a row fill for
    forced offsets): the lean version must give the same bits."""
    z = logits.clone()
    cond, uncond = z.chunk(2, dim=0)
    z = uncond + config.cfg_scale * (cond - uncond)
    z = z + grammar.image_bias
    if config.top_k:
        z = z.masked_fill(z < torch.topk(z, config.top_k, dim=-1).values[..., -1:], float("-inf"))
    if config.top_p < 1:
        sorted_z = torch.sort(z, dim=-1).values
        tail = sorted_z.softmax(-1).cumsum(-1)
        cut = torch.searchsorted(tail, torch.full_like(tail[..., :1], 1 - config.top_p), right=True)
        z = z.masked_fill(z < sorted_z.gather(-1, cut.clamp_max(z.shape[-1] - 1)), float("-inf"))
    p = z.softmax(-1)
    forced = grammar.forced_at(offsets)
    p = p.masked_fill((forced >= 0)[..., None], 0.0)
    return p.scatter_add(-1, forced.clamp_min(0)[..., None], (forced >= 0)[..., None].to(p.dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("top_k", "top_p"), [(0, 1.0), (3, 1.0), (0, 0.7), (4, 0.9)])
def test_lean_processed_probs_gives_the_plain_versions_bits(top_k, top_p, dtype):
    """The in-place CFG mix, the additive top-k / top-p drop and the multiplicative forcing are speed
    changes only: on random logits, forced offsets included, P is bit-identical to the plain code."""
    layout = Layout(height=3, width=4, forced=(-1, -1, -1, -1, 1) * 3, image_start=2, image_end=9,
                    row_stride=5)
    g = Grammar(layout, vocab=9, device=torch.device("cpu"))
    logits = torch.randn(6, 5, 9, generator=torch.Generator().manual_seed(7), dtype=dtype) * 3
    offsets = torch.arange(15).view(3, 5)
    config = SamplingConfig(cfg_scale=2.5, top_k=top_k, top_p=top_p)
    p = processed_probs(logits, offsets, g, config)
    assert torch.equal(p, _reference_probs(logits, offsets, g, config))
    assert (p[0, 4] == 1).sum() == 1  # offset 4 is forced: one-hot
