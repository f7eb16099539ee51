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
from functools import lru_cache

import torch

from sjd_batch.decoding import rng
from sjd_batch.decoding.state import DraftLaws


@dataclass
class Verdict:
    """Outcome of verifying one window for every row."""

    m: torch.Tensor  # [B] drafts accepted (the accepted prefix length)
    new: torch.Tensor  # [B] the resampled or bonus token, committed at offset n + m
    tested: torch.Tensor  # [B, L-1] bool
    accepted: torch.Tensor  # [B, L-1] bool


@dataclass
class VerifyDraws:
    """The uniforms of one verification, drawn by the caller with the rest of the iteration's.

    `accept[:, k]` is keyed (ACCEPT, n + k); `residual[:, s]` and `bonus[:, s]` by (RESIDUAL or AR,
    n + s) for every window slot s, of which only s = m is used.
    """

    accept: torch.Tensor  # [B, L-1] float64
    residual: torch.Tensor  # [B, L] float64
    bonus: torch.Tensor  # [B, L] float64


def verify_draws(seeds: torch.Tensor, n: torch.Tensor, width: int) -> VerifyDraws:
    """The uniforms `verify` uses at window width `width` (when the caller did not draw them)."""
    s = n[:, None] + torch.arange(width, device=n.device)
    return VerifyDraws(
        rng.uniforms(seeds, rng.ACCEPT, s[:, :-1]),
        rng.uniforms(seeds, rng.RESIDUAL, s),
        rng.uniforms(seeds, rng.AR, s),
    )


def verify(
    p: torch.Tensor,  # [B, L, V] processed laws of offsets n .. n+L-1
    drafts: torch.Tensor,  # [B, L-1] drafts at offsets n .. n+L-2
    q: torch.Tensor | DraftLaws,  # their draw laws: full [B, L-1, V], or compact
    n: torch.Tensor,  # [B] committed tokens
    limit: torch.Tensor,  # [B] laws that exist: min(L, T - n)
    seeds: torch.Tensor,  # [B, 2]
    exact: bool,
    draws: VerifyDraws | None = None,
    image: torch.Tensor | None = None,  # [V] bool image ids: needed when a law is UNIFORM
) -> Verdict:
    """Test drafts k = 0 .. limit-2 in order and stop at the first rejection (or exact mismatch).

    The bonus token is drawn with AR's own stream at its offset: it is a fresh draw from P there,
    exactly what plain AR would draw given the same P.
    """
    assert p.dim() == 3 and drafts.dim() == 2, "shape mismatch"
    laws = q if isinstance(q, DraftLaws) else DraftLaws.dense(q, drafts)
    batch, width = drafts.shape
    k, rows = _arange(width, p.device), _arange(batch, p.device)
    in_range = k < (limit[:, None] - 1)
    if exact:
        ok = drafts == p[:, :width].argmax(-1)
    else:
        draws = draws or verify_draws(seeds, n, width + 1)
        p_x = p.gather(-1, drafts[..., None]).squeeze(-1)  # draft k judged by p[k] (k < width)
        ok = draws.accept * laws.q_x < p_x
    ok &= in_range
    m = ok.long().cumprod(1).sum(1)
    p_m = p[rows, m]  # [B, V]: law of the offset right after the accepted prefix
    if exact:
        new = p_m.argmax(-1)
    else:
        q_m = laws.rows(m.clamp(max=width - 1)[:, None], drafts, image)[:, 0]
        bonus = m == limit - 1
        law = torch.where(bonus[:, None], p_m, residual_law(p_m, q_m))
        u = torch.where(bonus, draws.bonus[rows, m], draws.residual[rows, m])
        new = rng.categorical(law, u)
    mm = m[:, None]
    return Verdict(m=m, new=new, tested=in_range & (k <= mm), accepted=k < mm)


@lru_cache(maxsize=64)
def _arange(size: int, device: torch.device) -> torch.Tensor:
    """0 .. size-1, built once per (size, device): an iteration needs a few, each a tensor op."""
    return torch.arange(size, device=device)


def residual_law(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)), unnormalised; p itself where p == q (a rejection there has probability 0)."""
    residual = torch.sub(p, q).clamp_min_(0)
    empty = (residual.sum(-1, keepdim=True) <= 0).to(p.dtype)
    # where(empty, p, residual) as one in-place pass: an empty row is all zeros, and 0 + p = p
    return residual.addcmul_(empty, p)
