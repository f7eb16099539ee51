"""Same seed, same tokens; a sample's tokens do not depend on its batch-mates."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding import SamplingConfig, decode, resolve_method
from tests.decoding.toys import PROMPTS, seeds_for

SAMPLED = SamplingConfig(top_k=8, cfg_scale=2.0, temperature=0.9)
GREEDY = SamplingConfig(top_k=1, cfg_scale=2.0)


def _run(model, prompts, ids, method, sampling, **kw):
    prefix = model.encode(prompts, None, with_uncond=True)
    return decode(model, prefix, seeds_for(ids), sampling, resolve_method(method, **kw))


# method name, overrides (trees need a window wider than the tree: K=2 D=1 takes 3 slots)
SPECS = [
    ("ar", {}),
    ("sjd", {}),
    ("sjd-vp", {}),
    ("mc-sjd", {}),
    ("mc-sjd", {"coupling": "gumbel"}),
    ("sjd-pac", {"window": 6, "tree_width": 2, "tree_depth": 1}),
]


@pytest.mark.parametrize("method,kw", SPECS, ids=[f"{m}-{kw}" for m, kw in SPECS])
def test_same_seed_same_tokens_and_other_seed_differs(small64, method, kw):
    ids = [str(i) for i in range(len(PROMPTS))]
    a = _run(small64, PROMPTS, ids, method, SAMPLED, **kw).tokens
    b = _run(small64, PROMPTS, ids, method, SAMPLED, **kw).tokens
    c = _run(small64, PROMPTS, [f"other-{i}" for i in ids], method, SAMPLED, **kw).tokens
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("sampling", [SAMPLED, GREEDY], ids=["sampled", "greedy"])
@pytest.mark.parametrize("method", ["ar", "sjd", "sjd-vp", "mc-sjd-vp", "sjd-pac", "gumbel"])
def test_alone_equals_in_batch_of_eight(small64, method, sampling):
    ids = [f"s{i}" for i in range(len(PROMPTS))]
    kw = {} if method == "ar" else {"window": 6}
    if method == "sjd-pac":
        kw.update(tree_width=2, tree_depth=1)
    if method == "gumbel":
        method, kw = "sjd-pac", {**kw, "tree_width": 2, "tree_depth": 1, "coupling": "gumbel"}
    batch = _run(small64, PROMPTS, ids, method, sampling, **kw).tokens
    for i in (0, 1, 5):
        alone = _run(small64, [PROMPTS[i]], [ids[i]], method, sampling, **kw)
        assert torch.equal(alone.tokens[0], batch[i]), f"sample {i} differs alone vs in batch"


def test_lagged_done_check_changes_nothing(small64, monkeypatch):
    # the CUDA path reads "which slots are done?" one iteration late; the extra frozen iteration
    # must be a no-op
    import sjd_batch.decoding.engine as engine

    ids = [str(i) for i in range(len(PROMPTS))]
    eager = _run(small64, PROMPTS, ids, "mc-sjd-vp", SAMPLED, window=5)
    real = engine.HostFlags
    monkeypatch.setattr(engine, "HostFlags", lambda lag: real(lag=1))
    lagged = _run(small64, PROMPTS, ids, "mc-sjd-vp", SAMPLED, window=5)
    assert torch.equal(eager.tokens, lagged.tokens)
    assert [s.nfe for s in eager.stats] == [s.nfe for s in lagged.stats]
    assert [s.accept_lens for s in eager.stats] == [s.accept_lens for s in lagged.stats]


def test_sjd_pac_without_a_tree_is_mc_sjd_token_for_token(small64):
    # The ablation `sjd-pac:tree_width=1` is SJD + Adaptive Continuation, which is MC-SJD's maximal
    # coupling: same streams, same tokens, same forwards. The full sjd-pac feeds trees and counts them.
    ids = [str(i) for i in range(len(PROMPTS))]
    chain = _run(small64, PROMPTS, ids, "sjd-pac", SAMPLED, window=6, tree_width=1)
    mc = _run(small64, PROMPTS, ids, "mc-sjd", SAMPLED, window=6)
    assert torch.equal(chain.tokens, mc.tokens)
    assert [s.nfe for s in chain.stats] == [s.nfe for s in mc.stats]
    tree = _run(small64, PROMPTS, ids, "sjd-pac", SAMPLED, window=6, tree_width=2, tree_depth=1)
    assert sum(s.extra["tree_forwards"] for s in tree.stats) > 0
