"""Logits -> the processed distribution P that plain AR samples from (docs/design.md, section 4).

Order: CFG mix -> grammar mask -> temperature -> top-k -> top-p -> softmax in fp32 (or fp64 when the
model runs in fp64). Every method, AR included, calls `processed_probs`, so verification always
uses exactly the P that AR would sample from: "the one rule".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding.layout import Layout

CFG_MODES = ("raw", "log-softmax")


@dataclass(frozen=True)
class SamplingConfig:
    """How logits become P.

    Attributes:
        temperature: divides the logits; 0 means greedy (P = one-hot argmax).
        top_k: keep the k largest logits (ties at the k-th value are kept); 0 disables.
        top_p: nucleus mass in (0, 1]; 1 disables.
        cfg_scale: classifier-free guidance scale s; 1 disables guidance and halves the batch.
        cfg_mode: "raw" mixes logits, z = u + s(c - u); "log-softmax" mixes log-probabilities (HF
            `UnbatchedClassifierFreeGuidanceLogitsProcessor`, Emu3).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_mode: str = "raw"

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.cfg_mode not in CFG_MODES:
            raise ValueError(f"cfg_mode must be one of {CFG_MODES}, got {self.cfg_mode!r}")

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale != 1.0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


class Grammar:
    """The layout's grammar as device tensors: which ids are legal at each generated offset."""

    def __init__(self, layout: Layout, vocab: int, device: torch.device) -> None:
        self.length = layout.length
        self.forced = torch.tensor(layout.forced, dtype=torch.long, device=device)  # [T]
        ids = torch.arange(vocab, device=device)
        self.image = (ids >= layout.image_start) & (ids < layout.image_end)  # [V]
        self.image_start = layout.image_start
        self.row_stride = layout.row_stride
        self.num_image_ids = layout.num_image_ids
        self.vocab = vocab

    def forced_at(self, offsets: torch.Tensor) -> torch.Tensor:
        """Forced id (or -1) at each offset; offsets past the end read as free."""
        inside = offsets < self.length
        return torch.where(inside, self.forced[offsets.clamp(0, self.length - 1)], -1)

    def mask(self, z: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Set illegal logits to -inf. z: [B, W, V]; offsets: [B, W]."""
        forced = self.forced_at(offsets)[..., None]  # [B, W, 1]
        ids = torch.arange(z.shape[-1], device=z.device)
        legal = torch.where(forced >= 0, ids == forced, self.image)
        return z.masked_fill(~legal, float("-inf"))


def cfg_combine(logits: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """Mix the cond rows [0, B) with the uncond rows [B, 2B). logits: [2B, W, V] -> [B, W, V]."""
    cond, uncond = logits.chunk(2, dim=0)
    if mode == "log-softmax":
        cond, uncond = cond.log_softmax(-1), uncond.log_softmax(-1)
    return uncond + scale * (cond - uncond)


def warp(z: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the HF order). Returns logits with -inf outside the support."""
    if config.temperature > 0 and config.temperature != 1.0:
        z = z / config.temperature
    if config.top_k > 0 and config.top_k < z.shape[-1]:
        kth = torch.topk(z, config.top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if config.top_p < 1.0:
        z = _top_p(z, config.top_p)
    return z


def _top_p(z: torch.Tensor, top_p: float) -> torch.Tensor:
    # Drop the low tail whose total mass is at most 1 - top_p; the top token always survives.
    sorted_z, order = torch.sort(z, dim=-1, descending=False)
    tail_mass = sorted_z.softmax(-1).cumsum(-1)
    drop_sorted = tail_mass <= 1 - top_p
    drop_sorted[..., -1] = False
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return z.masked_fill(drop, float("-inf"))


def processed_probs(
    logits: torch.Tensor, offsets: torch.Tensor, grammar: Grammar, config: SamplingConfig
) -> torch.Tensor:
    """The processed distribution P.

    Args:
        logits: [R, W, V] model output (R = 2B with CFG, else B).
        offsets: [B, W] generated offset predicted by each window slot.
        grammar: the layout grammar.
        config: sampling settings.

    Returns:
        P: [B, W, V] in fp32 (fp64 if the logits are fp64); each row sums to 1.
    """
    work = torch.float64 if logits.dtype == torch.float64 else torch.float32
    z = logits.to(work)
    if config.uses_cfg:
        z = cfg_combine(z, config.cfg_scale, config.cfg_mode)
    z = grammar.mask(z, offsets)  # after the mix: masking both halves first would give -inf - -inf
    if config.temperature == 0:
        return torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(work)
    return warp(z, config).softmax(-1)
