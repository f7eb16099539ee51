"""Logits -> the processed distribution P that plain AR samples from (docs/design.md, section 4).

Order: CFG mix -> grammar mask -> temperature -> top-k -> top-p -> softmax in fp32 (or fp64 when the
model runs in fp64). Every method, AR included, calls `processed_probs`, so verification always
uses exactly the P that AR would sample from: "the one rule".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sjd_batch.decoding.layout import Layout
from sjd_batch.decoding.rng import MAX_POSITION

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
        # [T + MAX_POSITION]: the forced id (or -1) of each offset, padded with -1 (free) far past the
        # end, so `forced_at` is one lookup, not four ops (the engine keeps every offset below
        # rng.MAX_POSITION; a negative one reads the padding)
        self.forced = torch.tensor(list(layout.forced) + [-1] * MAX_POSITION, dtype=torch.long, device=device)
        ids = torch.arange(vocab, device=device)
        self.image = (ids >= layout.image_start) & (ids < layout.image_end)  # [V]
        # Added to the logits of a free slot: -inf outside the image ids (one pass, no [.., V] mask).
        self.image_bias = torch.zeros(vocab, device=device).masked_fill(~self.image, float("-inf"))
        self.image_start = layout.image_start
        self.row_stride = layout.row_stride
        self.num_image_ids = layout.num_image_ids
        self.vocab = vocab

    def forced_at(self, offsets: torch.Tensor) -> torch.Tensor:
        """Forced id (or -1) at each offset; offsets past the end read as free."""
        return self.forced[offsets]

    def force(self, p: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Overwrite, in place, the laws of forced offsets with one-hot rows. p: [B, W, V]; offsets: [B, W].

        What `mask` then softmax would give there (one legal id), for two cheap ops: zero the forced
        rows, then add 1 at the forced id (adding 0 to the other rows changes nothing).
        """
        forced = self.forced_at(offsets)
        free = (forced < 0).to(p.dtype)[..., None]
        # A broadcast multiply by 1 or 0 instead of `masked_fill_`: the same values (P is finite and
        # non-negative, so 0 * P is +0.0), but vectorised (a [16, 16, 4267] fill took 1.1 ms, this 0.3).
        p.mul_(free)
        return p.scatter_add_(-1, forced.clamp_min(0)[..., None], 1.0 - free)


def cfg_combine(logits: torch.Tensor, scale: float, mode: str) -> torch.Tensor:
    """Mix the cond rows [0, B) with the uncond rows [B, 2B). logits: [2B, W, V] -> [B, W, V]."""
    cond, uncond = logits.chunk(2, dim=0)
    if mode == "log-softmax":
        cond, uncond = cond.log_softmax(-1), uncond.log_softmax(-1)
    # uncond + scale * (cond - uncond), in one buffer: the same roundings (IEEE + and * commute), a
    # third of the allocations (on [B, L, V] laws an allocation costs as much as the pass)
    return torch.sub(cond, uncond).mul_(scale).add_(uncond)


def warp(z: torch.Tensor, config: SamplingConfig, inplace: bool = False) -> torch.Tensor:
    """Temperature, then top-k, then top-p (the HF order). Returns logits that are at most
    `drop_value(dtype)` (or -inf) outside the support: their softmax weight is exactly 0.

    `inplace`: z is the caller's scratch tensor and may be overwritten (saves a copy per filter).
    """
    if config.temperature > 0 and config.temperature != 1.0:
        z, inplace = z / config.temperature, True
    if config.top_k > 0 and config.top_k < z.shape[-1]:
        z = _drop_below(z, kth_largest(z, config.top_k), inplace)
        inplace = True
    if config.top_p < 1.0:
        z = _top_p(z, config.top_p, inplace)
    return z


def _drop_below(z: torch.Tensor, threshold: torch.Tensor, inplace: bool) -> torch.Tensor:
    """z where z >= threshold, else at most `drop_value` (whose exp is exactly 0, as -inf's is).

    An add of (z < threshold) * drop_value, not `masked_fill(.., -inf)`: 0 * drop_value is -0.0, so kept
    values are untouched, and the softmax that follows gives bit-identical laws (tested). With a
    random mask over most of the vocabulary (top-k 1000 of 4,267), masked_fill's branchy loop took
    4.7 ms on a [16, 16, 4267] window, the vectorised add 2.2 ms. -inf cannot be the addend (0 * -inf
    is NaN)."""
    below = torch.lt(z, threshold, out=torch.empty_like(z))  # 1.0 / 0.0 straight: 8x faster than .to()
    return (z.add_ if inplace else z.add)(below, alpha=drop_value(z.dtype))


def drop_value(dtype: torch.dtype) -> float:
    """The most negative finite value of `dtype`: added to a logit it gives -max or -inf (exp 0 both)."""
    return -torch.finfo(dtype).max


def _top_p(z: torch.Tensor, top_p: float, inplace: bool = False) -> torch.Tensor:
    """Drop the low tail whose total mass is at most 1 - top_p; the top token always survives.

    The dropped tail is cut by value: everything below the smallest kept logit. That is HF's rule
    (ascending sort, cumulative softmax <= 1 - top_p dropped) except when the cut falls inside a run
    of exactly equal logits, where HF keeps an arbitrary part of the run and this keeps all of it.
    Only the sorted values are needed (no indices, no scatter back), and since the cumulative mass
    is sorted, the number of dropped entries is a binary search, not a pass over [..., V].
    """
    sorted_z = sorted_values(z)
    tail_mass = sorted_z.softmax(-1).cumsum(-1)
    bound = torch.full_like(tail_mass[..., :1], 1 - top_p)
    dropped = torch.searchsorted(tail_mass, bound, right=True).clamp_max_(z.shape[-1] - 1)
    return _drop_below(z, sorted_z.gather(-1, dropped), inplace)


def kth_largest(z: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest value along the last dim, keepdim ([..., 1]); the top-k cut keeps z >= it.

    On the CPU this is NumPy's introselect (`ndarray.partition`, as `sorted_values` uses its sort),
    O(V) per row: torch's CPU `topk` sorts its k survivors, and at top-k 1000 of 4,267 codes it
    measured 12x slower and cost as much as textures-t2i's whole attention in an SJD iteration. The
    value is the same either way (ties included: it is the k-th entry of the sorted row), so the law
    does not change.
    """
    if z.device.type == "cpu" and not z.requires_grad:
        try:
            values = z.contiguous().numpy().copy()
        except RuntimeError:  # torch built without NumPy
            return torch.topk(z, k, dim=-1).values[..., -1:]
        cut = z.shape[-1] - k
        values.partition(cut, axis=-1)
        return torch.from_numpy(values[..., cut : cut + 1].copy())
    return torch.topk(z, k, dim=-1).values[..., -1:]


def sorted_values(z: torch.Tensor) -> torch.Tensor:
    """z sorted ascending along the last dim (values only).

    On the CPU this goes through NumPy's sort when NumPy is present (torch's CPU sort measured
    15-20x slower on [256, 683] rows, and the top-p sort was the largest cost of an SJD iteration
    around shapes-t2i's forward); CPU tensors share memory with NumPy, so there is no import and
    no copy besides the sort's own output. Elsewhere, and as the fallback, `torch.sort`.
    """
    if z.device.type == "cpu" and not z.requires_grad:
        try:
            values = z.contiguous().numpy().copy()
        except RuntimeError:  # torch built without NumPy
            return torch.sort(z, dim=-1).values
        values.sort(axis=-1)
        return torch.from_numpy(values)
    return torch.sort(z, dim=-1).values


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
    # After the mix (masking both halves first would give -inf - -inf). Free slots allow the image
    # ids; forced slots get their one-hot law at the end, whatever their logits said. In place when
    # z is already a buffer of ours (never into the model's own output).
    owned = z is not logits
    z = z.add_(grammar.image_bias) if owned else z + grammar.image_bias
    if config.temperature == 0:
        p = torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).to(work)
    else:
        p = warp(z, config, inplace=True).softmax(-1)
    return grammar.force(p, offsets)
