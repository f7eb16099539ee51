"""Hand-built laws give the exact accepted prefix, resampled token and bonus token."""

from __future__ import annotations

import pytest
import torch

from sjd_batch.decoding.rng import sample_seed, seed_tensor
from sjd_batch.decoding.verify import residual_law, verify

V = 6


def onehot(*ids: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(ids), V).double()


def run(p_rows, drafts, q=None, limit=None, exact=False, n=5, seed=0):
    p = torch.stack([onehot(*r)[0] if isinstance(r, tuple) else r for r in p_rows])[None]  # [1, L, V]
    x = torch.tensor([drafts])
    q = onehot(*drafts)[None] if q is None else q
    lim = torch.tensor([p.shape[1] if limit is None else limit])
    return verify(p, x, q, torch.tensor([n]), lim, seed_tensor([seed]), exact=exact)


def test_accepts_prefix_then_resamples_at_first_rejection():
    # drafts 1 1 1 1: p says 1, 1, then 2 -> accepts 2, rejects the 3rd, resamples 2 there
    v = run([(1,), (1,), (2,), (1,), (4,)], [1, 1, 1, 1])
    assert v.m.tolist() == [2]
    assert v.new.tolist() == [2]
    assert v.accepted.tolist() == [[True, True, False, False]]
    assert v.tested.tolist() == [[True, True, True, False]]


def test_rejection_at_position_zero():
    v = run([(3,), (1,), (1,)], [1, 1])
    assert v.m.tolist() == [0]
    assert v.new.tolist() == [3]
    assert v.tested.tolist() == [[True, False]]


def test_fully_accepted_window_commits_bonus():
    # every draft matches a one-hot p; the bonus comes from the law after the last draft
    v = run([(2,), (3,), (4,), (0,)], [2, 3, 4])
    assert v.m.tolist() == [3]
    assert v.new.tolist() == [0]


def test_window_longer_than_tokens_left():
    # only 2 laws exist (limit=2): one draft is tested, then the bonus from p[1]; p[2:] is ignored
    v = run([(2,), (5,), (1,), (1,)], [2, 1, 1], limit=2)
    assert v.m.tolist() == [1]
    assert v.new.tolist() == [5]
    assert v.tested.tolist() == [[True, False, False]]


def test_exact_verifier_is_argmax_match():
    soft = torch.tensor([0.1, 0.6, 0.3, 0, 0, 0], dtype=torch.float64)
    v = run([soft, soft, soft], [1, 2], exact=True)
    assert v.m.tolist() == [1] and v.new.tolist() == [1]


def test_residual_excludes_the_rejected_draft():
    # p = (.5, .5), draft 0 with one-hot q: accepted w.p. .5; when rejected the residual is exactly token 1
    p = torch.tensor([0.5, 0.5, 0, 0, 0, 0], dtype=torch.float64)
    outcomes = [run([p, p], [0], seed=sample_seed(1, str(i))) for i in range(400)]
    rejected = [o.new.item() for o in outcomes if o.m.item() == 0]
    assert 140 < len(rejected) < 260  # Binomial(400, .5): 6 sigma either side
    assert set(rejected) == {1}


@pytest.mark.parametrize(
    "p_list,q_list", [([0.7, 0.2, 0.1], [0.2, 0.2, 0.6]), ([0.25, 0.25, 0.5], [0.5, 0.5, 0.0])]
)
def test_acceptance_rate_is_overlap_of_p_and_q(p_list, q_list):
    # Pr[accept] = sum_v min(p, q) for x ~ q (speculative sampling)
    p = torch.tensor(p_list + [0.0] * 3, dtype=torch.float64)
    q = torch.tensor(q_list + [0.0] * 3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    drafts = torch.multinomial(q, 4000, replacement=True, generator=gen)
    seeds = seed_tensor([sample_seed(2, str(i)) for i in range(4000)])
    bp = p.expand(4000, 2, V)
    n, limit = torch.full((4000,), 7), torch.full((4000,), 2)
    v = verify(bp, drafts[:, None], q.expand(4000, 1, V), n, limit, seeds, False)
    expected = torch.minimum(p, q).sum().item()
    assert abs(v.m.double().mean().item() - expected) < 4 * (expected * (1 - expected) / 4000) ** 0.5


def test_residual_law_falls_back_to_p_when_p_equals_q():
    p = torch.tensor([[0.5, 0.5]])
    assert torch.equal(residual_law(p, p), p)
    assert torch.equal(residual_law(p, torch.tensor([[1.0, 0.0]])), torch.tensor([[0.0, 0.5]]))
