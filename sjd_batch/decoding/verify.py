"""Verifiers: which drafts of a window are accepted, and which token is committed after them.

Speculative test (SJD, Teng et al. arXiv 2410.01699; speculative sampling, Leviathan et al. arXiv
2211.17192): draft x at offset a, drawn from its law q, is accepted iff u * q(x) < p(x), with p the
processed AR law of offset a and a fresh u ~ U(0, 1) keyed by (sample, a). At the first rejection
the committed token is *resampled* from norm(max(0, p - q)); if every draft passes, a *bonus* token
is drawn from the law of the slot after the last draft. Vectorised first rejection as in
transformers' `_speculative_sampling`: no loop over rows or window positions, no host sync.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding import rng


@dataclass
class Verdict:
    """Outcome of verifying one window for every row."""

    m: torch.Tensor  # [B] drafts accepted (the accepted prefix length)
    new: torch.Tensor  # [B] the resampled or bonus token, committed at offset n + m
    tested: torch.Tensor  # [B, L-1] bool
    accepted: torch.Tensor  # [B, L-1] bool


def verify(
    p: torch.Tensor,  # [B, L, V] processed laws of offsets n .. n+L-1
    drafts: torch.Tensor,  # [B, L-1] drafts at offsets n .. n+L-2
    q: torch.Tensor,  # [B, L-1, V] their draw laws
    n: torch.Tensor,  # [B] committed tokens
    limit: torch.Tensor,  # [B] laws that exist: min(L, T - n)
    seeds: torch.Tensor,  # [B, 2]
    exact: bool,
) -> Verdict:
    """Test drafts k = 0 .. limit-2 in order and stop at the first rejection (or exact mismatch)."""
    assert p.dim() == 3 and drafts.dim() == 2 and q.shape[:2] == drafts.shape, "shape mismatch"
    batch, width = drafts.shape
    k = torch.arange(width, device=p.device)
    in_range = k < (limit[:, None] - 1)
    p_x = p[:, :width].gather(-1, drafts[..., None]).squeeze(-1)  # draft k judged by p[k]
    if exact:
        ok = drafts == p[:, :width].argmax(-1)
    else:
        u = rng.uniform(rng.key(seeds, rng.ACCEPT, n[:, None] + k))
        ok = u * q.gather(-1, drafts[..., None]).squeeze(-1) < p_x
    ok &= in_range
    m = ok.long().cumprod(1).sum(1)
    rows = torch.arange(batch, device=p.device)
    p_m = p[rows, m]  # [B, V]: law of the offset right after the accepted prefix
    if exact:
        new = p_m.argmax(-1)
    else:
        new = _resample_or_bonus(p_m, q[rows, m.clamp(max=width - 1)], m == limit - 1, n + m, seeds)
    return Verdict(m=m, new=new, tested=in_range & (k <= m[:, None]), accepted=k < m[:, None])


def _resample_or_bonus(
    p_m: torch.Tensor, q_m: torch.Tensor, bonus: torch.Tensor, offset: torch.Tensor, seeds: torch.Tensor
) -> torch.Tensor:
    residual = residual_law(p_m, q_m)
    resampled = rng.race(residual, rng.key(seeds, rng.RESIDUAL, offset))
    fresh = rng.race(p_m, rng.key(seeds, rng.BONUS, offset))
    return torch.where(bonus, fresh, resampled)


def residual_law(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)), unnormalised; p itself where p == q (a rejection there has probability 0)."""
    residual = (p - q).clamp_min(0)
    empty = residual.sum(-1, keepdim=True) <= 0
    return torch.where(empty, p, residual)
