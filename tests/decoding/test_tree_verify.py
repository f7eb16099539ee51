"""Tree verification (recursive rejection sampling without replacement) samples the target law exactly.

One tree window, hand-built laws, N rows with independent seeds. The root's law is p1; the K
depth-1 siblings are drawn without replacement from a stale law q1 that puts most mass where p1
has little (and the other way round); under a depth-1 node carrying token t the law is p2[t];
depth-2 siblings come from q2.
The committed token at depth 1 must have law p1, and the token at depth 2 (in rows that accepted
depth 1) must have law p2[t] given t. Thresholds are the harness's TV bound (delta = 1e-6).
Negative controls (with-replacement bookkeeping, a reused u, siblings drawn with replacement)
run on the same laws and must fail by a wide margin.
"""

from __future__ import annotations

import pytest
import torch

import sjd_batch.decoding.tree_verify as tree_verify
from sjd_batch.decoding import rng
from sjd_batch.decoding.methods import resolve_method
from sjd_batch.decoding.pac import draw_siblings, node_tokens, shapes_for
from sjd_batch.decoding.tree_verify import verify_tree
from tests.decoding.lossless import tv_bound

V, N = 6, 30_000
# Chosen (by exact computation over every sibling draw) so that each control moves the depth-1 law
# by 0.14-0.22 in TV: about 6 times the bound at N.
P1 = torch.tensor([0.22, 0.10, 0.20, 0.35, 0.13, 0.0], dtype=torch.float64)
Q1 = torch.tensor([0.0, 0.03, 0.08, 0.82, 0.06, 0.01], dtype=torch.float64)
Q2 = torch.tensor([0.05, 0.05, 0.30, 0.30, 0.30, 0.0], dtype=torch.float64)


def _p2() -> torch.Tensor:
    gen = torch.Generator().manual_seed(4)
    table = torch.rand(V, V, generator=gen, dtype=torch.float64) ** 3
    table[:, 5] = 0.0
    return table / table.sum(-1, keepdim=True)


P2 = _p2()


def _tv(draws: torch.Tensor, law: torch.Tensor) -> float:
    emp = torch.bincount(draws, minlength=V).double() / max(1, draws.numel())
    return 0.5 * float((emp - law).abs().sum())


def _bound(law: torch.Tensor, n: int) -> float:
    return tv_bound({i: float(p) for i, p in enumerate(law)}, n)


def _run(width: int, depth: int, window: int, replacement_draw: bool = False, tag: int = 0):
    """Verify N identical trees with per-row seeds; return the committed tokens at depths 1 and 2."""
    config = resolve_method("sjd-pac", window=window, tree_width=width, tree_depth=depth)
    topo = shapes_for(window, width, depth, "cpu").rows(torch.ones(N, dtype=torch.bool))
    seeds = rng.seed_tensor([rng.sample_seed(tag, str(i)) for i in range(N)])
    n = torch.full((N,), 3)
    q = torch.stack([Q1, Q2, *[Q2] * (window - 3)])[None].expand(N, -1, -1)  # [N, L-1, V]
    seq = torch.zeros(N, 3 + window, dtype=torch.long)
    # every chain draft is drawn from its stated law
    chain = rng.race(q, rng.key(seeds, rng.DRAFT, n[:, None] + torch.arange(window - 1)))
    seq[:, 3 : 2 + window] = chain
    offsets, main = n[:, None] + torch.arange(depth), chain[:, :depth]
    if replacement_draw:  # control: siblings as independent draws (repeats allowed)
        keys = [rng.key(seeds, rng.SIBLING, offsets * 8 + r) for r in range(width - 1)]
        siblings = torch.stack([rng.race(q[:, :depth], k) for k in keys], -1)
    else:
        siblings = draw_siblings(q[:, :depth], main, offsets, torch.zeros(N, dtype=torch.long), seeds, config)
    x = node_tokens(seq, siblings, n, topo)
    p = torch.where((topo.depth == 0)[..., None], P1, P2[x])  # law after each node, given its token
    verdict = verify_tree(p, x, q, topo, n, torch.full((N,), window), seeds)
    path = x.gather(1, verdict.path.clamp_min(0))
    first = torch.where(verdict.m >= 1, path[:, 1], verdict.new)
    second = torch.where(verdict.m >= 2, path[:, 2], verdict.new)
    return first, second, verdict.m >= 1


def _assert_exact(first, second, reached, label):
    tv1, tau1 = _tv(first, P1), _bound(P1, N)
    assert tv1 <= tau1, f"{label}: depth-1 token TV {tv1:.4f} > {tau1:.4f}"
    for t in range(V):
        rows = reached & (first == t)
        if rows.sum() >= 2000:
            tv2, tau2 = _tv(second[rows], P2[t]), _bound(P2[t], int(rows.sum()))
            assert tv2 <= tau2, f"{label}: depth-2 token after {t}: TV {tv2:.4f} > {tau2:.4f}"


@pytest.mark.parametrize("width,depth,window", [(2, 1, 6), (3, 1, 8), (3, 2, 16), (4, 2, 24)])
def test_tree_commits_the_target_law(width, depth, window):
    _assert_exact(*_run(width, depth, window), f"K={width} D={depth} L={window}")


def test_siblings_are_distinct_and_follow_the_draft_law():
    first, _, _ = _run(3, 1, 8)  # the harness itself runs; now the drafts: no repeats among siblings
    seeds = rng.seed_tensor([rng.sample_seed(9, str(i)) for i in range(N)])
    offsets = torch.full((N, 1), 5)
    law = Q1.expand(N, 1, V)
    main = rng.race(law, rng.key(seeds, rng.DRAFT, offsets))
    config = resolve_method("sjd-pac", window=8, tree_width=3, tree_depth=1)
    sib = draw_siblings(law, main, offsets, torch.zeros(N, dtype=torch.long), seeds, config)[:, 0]
    assert (sib != main).all() and (sib[:, 0] != sib[:, 1]).all()
    # the second draw of a draw without replacement: sum_a q(a) q(b) / (1 - q(a))
    second = (Q1[:, None] * Q1[None, :] / (1 - Q1[:, None])).fill_diagonal_(0).sum(0)
    assert _tv(sib[:, 0], second) <= _bound(second, N)


# --- negative controls: each must be caught by a wide margin -------------------------------------


def _tv_first(first) -> tuple[float, float]:
    return _tv(first, P1), _bound(P1, N)


def test_control_with_replacement_bookkeeping(monkeypatch):
    real_scatter = torch.Tensor.scatter

    def keep_q(self, dim, index, value, *args, **kwargs):  # q_r = Q: forgets the removed siblings
        if isinstance(value, float) and value == 0.0:
            return self
        return real_scatter(self, dim, index, value, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "scatter", keep_q)
    tv, tau = _tv_first(_run(3, 1, 8)[0])
    assert tv > 3 * tau, f"with-replacement bookkeeping not detected: TV {tv:.4f} <= 3 tau {3 * tau:.4f}"


def test_control_reused_u(monkeypatch):
    def same_u(seeds, offsets, rank):  # every sibling reuses the rank-0 test's u
        return rng.uniform(rng.key(seeds, rng.ACCEPT, offsets))

    monkeypatch.setattr(tree_verify, "_uniforms", same_u)
    tv, tau = _tv_first(_run(3, 1, 8)[0])
    assert tv > 3 * tau, f"reused u not detected: TV {tv:.4f} <= 3 tau {3 * tau:.4f}"


def test_control_siblings_drawn_with_replacement():
    tv, tau = _tv_first(_run(3, 1, 8, replacement_draw=True)[0])
    assert tv > 3 * tau, f"with-replacement siblings not detected: TV {tv:.4f} <= 3 tau {3 * tau:.4f}"
