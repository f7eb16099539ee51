"""With top-k = 1 every method is the Jacobi fixed point of greedy AR: identical tokens, bit for bit."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding import SamplingConfig, decode, resolve_method
from tests.decoding.toys import PROMPTS, seeds_for

METHODS = ["jacobi", "sjd", "sjd-vp", "mc-sjd", "mc-sjd-vp", "sjd-pac"]


def _decode(model, prompts, method, **overrides):
    sampling = SamplingConfig(top_k=1, cfg_scale=3.0)
    prefix = model.encode(prompts, None, with_uncond=True)
    seeds = seeds_for([str(i) for i in range(len(prompts))])
    return decode(model, prefix, seeds, sampling, resolve_method(method, **overrides))


def _margin(model, prompts):
    """Top-2 margin of the logits, printed on failure: a tiny margin means a float tie, not a bug."""
    out = _decode(model, prompts, "ar")
    return f"{len(prompts)} prompts; AR tokens {out.tokens.tolist()}"


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("method", METHODS)
def test_greedy_methods_equal_ar(tiny32, method, batch):
    prompts = PROMPTS[:batch]
    ar = _decode(tiny32, prompts, "ar").tokens
    got = _decode(tiny32, prompts, method, window=16).tokens
    assert torch.equal(got, ar), _margin(tiny32, prompts)


@pytest.mark.parametrize("coupling", ["gumbel", "independent"])
def test_greedy_couplings_and_trees_equal_ar(tiny32, coupling):
    ar = _decode(tiny32, PROMPTS, "ar").tokens
    assert torch.equal(_decode(tiny32, PROMPTS, "mc-sjd", window=7, coupling=coupling).tokens, ar)
    tree = _decode(tiny32, PROMPTS, "sjd-pac", window=5, tree_width=2, tree_depth=1, coupling=coupling)
    assert torch.equal(tree.tokens, ar)


@pytest.mark.parametrize("window", [2, 5, 16])
@pytest.mark.parametrize("init", ["random", "horizontal", "horizontal-sample", "vertical"])
def test_greedy_sjd_equals_ar_for_every_window_and_init(tiny32, window, init):
    ar = _decode(tiny32, PROMPTS, "ar").tokens
    got = _decode(tiny32, PROMPTS, "sjd", window=window, init=init).tokens
    assert torch.equal(got, ar)


def test_greedy_window_longer_than_the_whole_layout(tiny32):
    # 80 > 73 tokens: every window is clamped at the layout end from the first iteration on
    ar = _decode(tiny32, PROMPTS[:4], "ar").tokens
    got = _decode(tiny32, PROMPTS[:4], "mc-sjd", window=80, init="vertical").tokens
    assert torch.equal(got, ar)


def test_greedy_jacobi_saves_forwards_on_a_peaky_model(tiny32):
    # the fixed point is reached in fewer forwards than tokens: otherwise the test above is vacuous
    out = _decode(tiny32, PROMPTS, "jacobi", window=16)
    assert max(s.nfe for s in out.stats) < out.stats[0].tokens


def test_jacobi_refuses_sampling(tiny32):
    prefix = tiny32.encode(["x"], None, with_uncond=False)
    with pytest.raises(ValueError, match="greedy"):
        decode(tiny32, prefix, seeds_for(["0"]), SamplingConfig(), resolve_method("jacobi"))
