"""Typed state of a batched decode, and the per-sample statistics it returns.

Vocabulary (used in every name and stat; the glossary is at the top of `jacobi.py`): a *forward* is one
network call on the doubled cond/uncond batch, and NFE counts them; its *accept length* is the number of
tokens it committed (accepted drafts + 1). The prefill is a forward that commits one token, so accept
lengths always sum to the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch

from sjd_batch.decoding.tree import TreeState

UNIFORM, ONEHOT = -1, -2  # `DraftLaws.src` codes of the two implicit laws


@dataclass
class DraftLaws:
    """The laws of the current drafts, stored compactly.

    Verification reads q(x) at every draft but a whole row of q only at the first rejection (for the
    residual), and MC-SJD reads whole rows once per iteration. So a draft's law is its value at the
    draft, `q_x`, plus where its row lives: row `src` of `table` (the [B, L, V] law tensor of the
    iteration that drew it, kept by reference, never gathered or copied) or one of two implicit laws:
    UNIFORM over the image ids (random init) or ONEHOT at the draft itself (spatial init, forced
    tokens, `init_law: onehot`). That keeps every [B, L, V] gather, one-hot and `where` out of the loop.
    """

    q_x: torch.Tensor  # [B, J] q(draft)
    src: torch.Tensor  # [B, J] long: row of `table`, or UNIFORM / ONEHOT
    table: torch.Tensor  # [B, L, V] (any L >= 1 when every src is implicit)

    @classmethod
    def dense(cls, q: torch.Tensor, drafts: torch.Tensor) -> DraftLaws:
        """From full laws q [B, J, V] of drafts [B, J] (hand-built laws in tests)."""
        src = torch.arange(drafts.shape[1], device=q.device).expand_as(drafts)
        return cls(q.gather(-1, drafts[..., None]).squeeze(-1), src, q)

    def rows(self, k: torch.Tensor, drafts: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """Full rows [B, K, V] of the laws of drafts k [B, K] (window offsets).

        Args:
            k: [B, K] long draft indices.
            drafts: [B, J] the drafts (the ONEHOT law sits at the draft).
            image: [V] bool image ids (the UNIFORM law), or None when no law is UNIFORM.
        """
        return self.rows_at(row_index(k.shape[0], k.device), k, drafts.gather(1, k), image)

    def rows_at(self, b: torch.Tensor, k: torch.Tensor, x: torch.Tensor, image: torch.Tensor | None):
        """`rows` for any (slot b, draft k) pairs of one shape, with x the drafts there: [..., V]."""
        src = self.src[b, k]
        # Whole rows by advanced indexing, not `gather` with an index expanded over V: the same values,
        # copied a row at a time (a [16, 15, 4267] gather took 2.7 ms on the CPU, this 0.7 ms).
        out = self.table[b, src.clamp_min(0)]
        # Implicit rows overwrite the gathered ones in place: zero them (multiply by 0 or 1), then add
        # 1 at the draft (ONEHOT) and the law (UNIFORM). The same values as selecting with `where`
        # (laws are finite and >= 0, and x + 0 = x), in vectorised passes over one buffer (MC-SJD
        # reads [B, L-1, V] of these every iteration).
        out.mul_((src >= 0).to(out.dtype)[..., None])
        onehot = (src == ONEHOT).to(out.dtype)[..., None]
        out.scatter_add_(-1, x[..., None], onehot)
        if image is None:
            return out
        uniform = (src == UNIFORM).to(out.dtype)[..., None]
        return out.addcmul_(uniform, _uniform_law(image, out.dtype))


@lru_cache(maxsize=64)
def row_index(count: int, device: torch.device) -> torch.Tensor:
    """[count, 1] row indices for reading whole [V] rows by advanced indexing (`table[rows, src]`), which
    copies a row at a time where a `gather` with an index expanded over V is 4x slower on the CPU.
    Built once per (count, device)."""
    return torch.arange(count, device=device)[:, None]


@lru_cache(maxsize=32)  # keyed by the mask tensor itself (tensors hash by identity): one per grammar
def _uniform_law(image: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The UNIFORM law over the image ids [V], built once per (mask, dtype) instead of per call."""
    return image.to(dtype) / image.sum()


@dataclass
class JacobiState:
    """Per-slot decode state on the device: B slots; uncond row b+B shares everything with row b.

    `seq[b, :n[b]]` are committed tokens; `seq[b, n[b] : n[b]+L-1]` are the current drafts, whose
    laws are `laws`. `prev_p` is the P of the previous iteration, by reference; `prev_src[b, s]` is
    the row of it that predicted the offset window slot s predicts now, or -1 (for SJD-VP).
    A slot whose sample is done (n == T) or that holds none is inactive: it still rides in every
    forward (static shapes), but nothing it computes is kept.
    """

    seq: torch.Tensor  # [B, T+L] long
    n: torch.Tensor  # [B] long: committed tokens
    laws: DraftLaws | None  # None for AR (no drafts)
    prev_p: torch.Tensor  # [B, L, V] or a [B, 1, 1] placeholder when SJD-VP is off
    prev_src: torch.Tensor  # [B, L] long
    forwards: torch.Tensor  # [B] long: forwards this slot's sample took part in (NFE)
    accept_lens: torch.Tensor  # [B, T+1] long: tokens committed by forward i (0 = unused)
    tested: torch.Tensor  # [B, L-1] long: drafts tested at each window offset
    accepted: torch.Tensor  # [B, L-1] long: drafts accepted at each window offset
    active: torch.Tensor  # [B] bool: decoding a sample that is not done
    tree: TreeState | None = None  # draft trees (sjd-pac) only
    ar_u: torch.Tensor | None = None  # [B, T+1] float64: plain AR's uniform of every offset (ar only)

    @classmethod
    def empty(cls, slots: int, length: int, width: int, vocab: int, keep_p: bool, dtype: torch.dtype,
              device: torch.device) -> JacobiState:
        """Every slot empty (inactive); the engine fills one at a time. `dtype` is P's; `keep_p`:
        SJD-VP needs the previous P (its placeholder then has the vocabulary's width)."""
        long, work = dict(dtype=torch.long, device=device), dict(dtype=dtype, device=device)
        drafts = width - 1
        laws = None
        if width > 1:
            laws = DraftLaws(torch.ones(slots, drafts, **work), torch.full((slots, drafts), ONEHOT, **long),
                             torch.zeros(slots, 1, vocab, **work))
        return cls(
            seq=torch.zeros(slots, length + width, **long), n=torch.full((slots,), length, **long), laws=laws,
            prev_p=torch.zeros(slots, 1, vocab if keep_p else 1, **work),
            prev_src=torch.full((slots, width), -1, **long), forwards=torch.zeros(slots, **long),
            accept_lens=torch.zeros(slots, length + 1, **long), tested=torch.zeros(slots, drafts, **long),
            accepted=torch.zeros(slots, drafts, **long),
            active=torch.zeros(slots, dtype=torch.bool, device=device),
        )

    def observe_iteration(self, step: IterationResult, length: int) -> None:
        """Commit one iteration for the active slots; the others keep their tokens and statistics.

        Laws are taken as they are for every slot: an inactive slot is never verified again before
        a new sample resets it.
        """
        a = self.active
        self.seq = torch.where(a[:, None], step.seq, self.seq)
        self.laws, self.prev_p, self.prev_src = step.laws, step.prev_p, step.prev_src
        committed = torch.where(a, step.m + 1, 0)
        self.accept_lens.scatter_add_(1, self.forwards[:, None], committed[:, None])
        if self.tested.shape[1]:  # AR has no drafts: skip four ops on empty tensors
            active = a[:, None]
            self.tested += step.tested & active
            self.accepted += step.accepted & active
        self.n = self.n + committed
        self.forwards = self.forwards + a
        self.active = self.n < length
        if self.tree is not None and step.tree is not None:
            self.tree.observe(a, step.tree)


@dataclass
class IterationResult:
    """What one iteration proposes for every slot, before the inactive ones are left out."""

    seq: torch.Tensor  # [B, T+L] committed tokens and the next drafts
    m: torch.Tensor  # [B] drafts accepted
    tested: torch.Tensor  # [B, L-1] bool: draft k was tested
    accepted: torch.Tensor  # [B, L-1] bool: draft k was accepted
    laws: DraftLaws | None  # laws of the next drafts
    prev_p: torch.Tensor  # this iteration's P (SJD-VP) or the placeholder
    prev_src: torch.Tensor  # [B, L] long
    tree: TreeState | None = None  # the next trees' siblings and counter increments (sjd-pac)


@dataclass
class SampleStats:
    """What one sample cost, in the paper's vocabulary.

    Attributes:
        tokens: generated tokens T (the layout length, forced tokens included).
        nfe: forward passes this sample took part in, the prefill included.
        ar_steps: forward passes plain AR needs for the same sample (= T).
        step_compression: ar_steps / nfe.
        accept_lens: tokens committed by each forward, the prefill (1) first; sums to `tokens`.
        accept_len_mean: mean of `accept_lens`.
        drafts_tested / drafts_accepted: speculative tests run and passed.
        acceptance_rate: drafts_accepted / drafts_tested (0 when nothing was tested).
        accepted_by_offset / tested_by_offset: the same counts per window offset k (draft k+1).
        prefill_s / decode_s / pixel_s: this sample's own wall seconds: its share of the prefill it
            started with, its decode from entering a slot to finishing, its pixel decoding.
        batch_size: samples decoded together.
        method: method name; params: every decoding and sampling parameter.
    """

    tokens: int
    nfe: int
    ar_steps: int
    accept_lens: list[int]
    drafts_tested: int
    drafts_accepted: int
    accepted_by_offset: list[int]
    tested_by_offset: list[int]
    method: str
    params: dict[str, object]
    batch_size: int
    prefill_s: float = 0.0
    decode_s: float = 0.0
    pixel_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def step_compression(self) -> float:
        return self.ar_steps / self.nfe

    @property
    def accept_len_mean(self) -> float:
        return sum(self.accept_lens) / len(self.accept_lens)

    @property
    def acceptance_rate(self) -> float:
        return self.drafts_accepted / self.drafts_tested if self.drafts_tested else 0.0

    def observe_pixels(self, seconds: float) -> None:
        self.pixel_s = seconds
