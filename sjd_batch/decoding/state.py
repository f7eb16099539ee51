"""Typed state of a batched decode, and the per-sample statistics it returns.

Vocabulary (used in every name and stat; the glossary is at the top of `jacobi.py`): a *forward* is one
network call on the doubled cond/uncond batch, and NFE counts them; its *accept length* is the number of
tokens it committed (accepted drafts + 1). The prefill is a forward that commits one token, so accept
lengths always sum to the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class JacobiState:
    """Per-row decode state on the device. B rows; uncond row b+B shares everything with row b.

    `seq[b, :n[b]]` are committed tokens; `seq[b, n[b] : n[b]+L-1]` are the current drafts, whose
    laws are `q`. `prev_p[b, k]` is the P computed in the previous iteration for offset n[b]+k
    (for SJD-VP), valid where `prev_valid`.
    """

    seq: torch.Tensor  # [B, T+L] long
    n: torch.Tensor  # [B] long: committed tokens
    q: torch.Tensor  # [B, L-1, V]: draft laws
    prev_p: torch.Tensor  # [B, L, V]
    prev_valid: torch.Tensor  # [B, L] bool
    forwards: torch.Tensor  # [B] long: forwards this row took part in (NFE)
    accept_lens: torch.Tensor  # [B, T+1] long: tokens committed by forward i (0 = unused)
    tested: torch.Tensor  # [B, L-1] long: drafts tested at each window offset
    accepted: torch.Tensor  # [B, L-1] long: drafts accepted at each window offset

    def observe_iteration(self, active: torch.Tensor, step: IterationResult) -> None:
        """Commit one iteration for the active rows ([B] bool); finished rows stay frozen."""
        a = active[:, None]
        self.seq = torch.where(a, step.seq, self.seq)
        self.q = torch.where(a[..., None], step.q, self.q)
        self.prev_p = torch.where(a[..., None], step.prev_p, self.prev_p)
        self.prev_valid = torch.where(a, step.prev_valid, self.prev_valid)
        committed = torch.where(active, step.m + 1, 0)
        self.accept_lens.scatter_add_(1, self.forwards[:, None], committed[:, None])
        self.tested += (step.tested & a).long()
        self.accepted += (step.accepted & a).long()
        self.n = self.n + committed
        self.forwards = self.forwards + active.long()


@dataclass
class IterationResult:
    """What one Jacobi iteration proposes for every row, before freezing the finished ones."""

    seq: torch.Tensor  # [B, T+L] committed tokens and the next drafts
    m: torch.Tensor  # [B] drafts accepted
    tested: torch.Tensor  # [B, L-1] bool: draft k was tested
    accepted: torch.Tensor  # [B, L-1] bool: draft k was accepted
    q: torch.Tensor  # [B, L-1, V] laws of the next drafts
    prev_p: torch.Tensor  # [B, L, V] this iteration's P, aligned to the next window
    prev_valid: torch.Tensor  # [B, L] bool


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
        prefill_s / decode_s / pixel_s: wall seconds of the batch this sample ran in.
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

    def to_row(self) -> dict[str, object]:
        """A flat record (for Parquet / JSON): scalars, lists and the parameter dict."""
        return {
            "tokens": self.tokens,
            "nfe": self.nfe,
            "ar_steps": self.ar_steps,
            "step_compression": self.step_compression,
            "accept_len_mean": self.accept_len_mean,
            "accept_lens": list(self.accept_lens),
            "drafts_tested": self.drafts_tested,
            "drafts_accepted": self.drafts_accepted,
            "acceptance_rate": self.acceptance_rate,
            "accepted_by_offset": list(self.accepted_by_offset),
            "tested_by_offset": list(self.tested_by_offset),
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "pixel_s": self.pixel_s,
            "batch_size": self.batch_size,
            "method": self.method,
            "params": dict(self.params),
        }
