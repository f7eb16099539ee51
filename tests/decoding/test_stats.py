"""Accounting invariants: accept lengths sum to the tokens, NFE counts every forward, never above AR."""

from __future__ import annotations

import pytest

from sjd_batch.decoding import SamplingConfig, decode, resolve_method
from tests.decoding.toys import PROMPTS, seeds_for


@pytest.mark.parametrize("method", ["ar", "sjd", "sjd-vp", "mc-sjd", "mc-sjd-vp", "sjd-pac"])
@pytest.mark.parametrize("window", [2, 7, 16])
def test_stats_invariants(small64, method, window):
    sampling = SamplingConfig(top_k=6, cfg_scale=2.0)
    prefix = small64.encode(PROMPTS, None, with_uncond=True)
    seeds = seeds_for([str(i) for i in range(len(PROMPTS))])
    tree = {"tree_width": 2, "tree_depth": 1 if window < 16 else 2} if method == "sjd-pac" else {}
    if method == "sjd-pac" and window == 2:
        tree = {"tree_width": 1}  # no tree fits a window of 2: sjd-pac is then MC-SJD
    out = decode(small64, prefix, seeds, sampling, resolve_method(method, window=window, **tree))
    length = small64.layout.length
    for s in out.stats:
        assert sum(s.accept_lens) == s.tokens == length
        assert len(s.accept_lens) == s.nfe
        assert s.accept_lens[0] == 1  # the prefill commits the first token
        assert all(1 <= a <= (1 if method == "ar" else window) for a in s.accept_lens)
        assert s.nfe <= s.ar_steps == length
        assert s.step_compression == pytest.approx(length / s.nfe)
        assert s.drafts_accepted <= s.drafts_tested
        assert sum(s.accepted_by_offset) == s.drafts_accepted
        # each iteration commits its accepted drafts plus one resampled or bonus token, and sees at
        # most one rejection
        assert s.drafts_accepted == sum(a - 1 for a in s.accept_lens[1:])
        assert 0 <= s.drafts_tested - s.drafts_accepted <= s.nfe - 1
        if tree.get("tree_width", 1) > 1:  # trees were fed, and only after rejections
            assert 0 < s.extra["tree_forwards"] <= s.drafts_tested - s.drafts_accepted
            assert 0 <= s.extra["sibling_accepts"] <= s.drafts_accepted


def test_ar_stats_are_one_token_per_forward(small64):
    prefix = small64.encode(["a"], None, with_uncond=False)
    out = decode(small64, prefix, seeds_for(["0"]), SamplingConfig(), resolve_method("ar"))
    assert out.stats[0].nfe == small64.layout.length
    assert out.stats[0].step_compression == 1.0
