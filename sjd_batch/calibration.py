"""The decoding statistics that say whether a model behaves like a real AR text-to-image model.

`sjd-batch calibrate` (commands/calibrate.py) prints them beside the published figures of real models.
Every statistic is measured on the model's image tokens (the free slots of its layout; forced tokens
such as end-of-line markers are left out) at its default sampling:

- law statistics, teacher-forced on plain AR samples (`forced_laws`): the mean entropy of the law that
  is actually sampled from (after CFG, temperature, top-k and top-p), the same for the raw conditional
  law (no CFG, no truncation), and the share of image tokens whose top-1 probability is below 0.05;
- total variation by distance (`tv_by_distance`): how much the law of token j moves when the token d
  positions earlier is replaced by an independent draw from its own law;
- method statistics from real decodes with `sjd_batch.generate` (`method_counts`): step compression
  = AR forwards / method forwards, and tokens committed per forward.

Intervals are 95% percentile intervals of a bootstrap over prompts (`bootstrap_ratio`), paired when a
statistic compares two methods on the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sjd_batch.decoding.protocol import ImageTokenModel, decode_window, prefill_window
from sjd_batch.decoding.sampling import Grammar, SamplingConfig, processed_probs

RAW = SamplingConfig()  # the model's own conditional law: no CFG, no temperature, no truncation


@dataclass
class Laws:
    """Teacher-forced laws of every generated offset of B samples.

    Attributes:
        sampled: [B, T, V] the processed law P that decoding samples from.
        raw: [B, T, V] the raw conditional law (no CFG, no truncation), or None when not asked for.
    """

    sampled: torch.Tensor
    raw: torch.Tensor | None


@torch.no_grad()
def forced_laws(
    model: ImageTokenModel, prompts: list[str], tokens: torch.Tensor, sampling: SamplingConfig, raw: bool
) -> Laws:
    """Run the prompts and the generated tokens [B, T] through the model in one prefill + one window.

    The window feeds offsets 0 .. T-2 at their slots, so its outputs are the laws of offsets 1 .. T-1;
    the prefill's last output is the law of offset 0: exactly the laws decoding computes.
    """
    prefix = model.encode(prompts, None, with_uncond=sampling.uses_cfg)
    length = model.layout.length
    total = prefix.length + length + 1
    cache = model.new_cache(prefix.rows, total)
    first = model.forward(cache, prefix.ids, prefill_window(prefix, total))[:, -1:]
    ids = tokens[:, : length - 1].to(model.device)
    if sampling.uses_cfg:
        ids = torch.cat([ids, ids])
    slot0 = torch.full((prefix.rows,), prefix.length, dtype=torch.long, device=model.device)
    rest = model.forward(cache, ids, decode_window(slot0, prefix.start, length - 1, total))
    logits = torch.cat([first, rest], dim=1)  # [R, T, V]
    grammar = Grammar(model.layout, model.vocab_size, model.device)
    offsets = torch.arange(length, device=model.device).expand(len(prompts), length)
    sampled = processed_probs(logits, offsets, grammar, sampling)
    raw_law = processed_probs(logits[: len(prompts)], offsets, grammar, RAW) if raw else None
    return Laws(sampled, raw_law)


def image_offsets(model: ImageTokenModel) -> torch.Tensor:
    """Offsets of the free (image-code) slots of the layout, [N] long."""
    return torch.tensor(model.layout.code_offsets(), dtype=torch.long)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of laws [..., V] -> [...]."""
    return -(p * p.clamp_min(1e-30).log()).sum(-1)


@dataclass
class LawStats:
    """Per-sample means over image tokens, [B] each."""

    entropy: np.ndarray
    entropy_raw: np.ndarray
    top1_below: np.ndarray  # share of the sample's image tokens with top-1 probability < threshold
    top1_below_raw: np.ndarray


def law_stats(laws: Laws, offsets: torch.Tensor, threshold: float = 0.05) -> LawStats:
    """Entropy and top-1 statistics of the image-token laws, per sample."""
    sampled = laws.sampled[:, offsets.to(laws.sampled.device)]
    raw = laws.raw[:, offsets.to(laws.raw.device)] if laws.raw is not None else sampled

    def per_sample(x: torch.Tensor) -> np.ndarray:
        return x.float().mean(1).cpu().numpy()

    return LawStats(
        entropy=per_sample(entropy(sampled)),
        entropy_raw=per_sample(entropy(raw)),
        top1_below=per_sample(sampled.amax(-1) < threshold),
        top1_below_raw=per_sample(raw.amax(-1) < threshold),
    )


@torch.no_grad()
def tv_by_distance(
    model: ImageTokenModel,
    prompts: list[str],
    tokens: torch.Tensor,
    laws: torch.Tensor,
    sampling: SamplingConfig,
    distances: tuple[int, ...],
    per_sample: int,
    generator: torch.Generator,
) -> dict[int, np.ndarray]:
    """Total variation of token j's law when token j-d is replaced by an independent draw from its law.

    For each sample, `per_sample` image offsets i are drawn uniformly among those that have an image
    offset j = i + d for the smallest d. Token i is replaced by x' ~ P_i (its own sampled law given the
    true prefix; x' may equal the original token, as a redraw may), the sequence is teacher-forced
    again, and TV(P_j, P'_j) = 0.5 * sum |P_j - P'_j| is read at every j = i + d that is an image
    offset. Distances count generated offsets (end-of-line columns included), as SJD's window does.

    Args:
        tokens: [B, T] AR samples; laws: [B, T, V] their teacher-forced sampled laws.

    Returns:
        {d: [B] per-sample mean TV} (NaN where a sample had no (i, i+d) pair).
    """
    free = torch.zeros(model.layout.length, dtype=torch.bool)
    free[image_offsets(model)] = True
    candidates = [i for i in range(len(free)) if free[i] and i + min(distances) < len(free)]
    sums = {d: np.zeros(len(prompts)) for d in distances}
    counts = {d: np.zeros(len(prompts)) for d in distances}
    for _ in range(per_sample):
        pick = torch.randint(len(candidates), (len(prompts),), generator=generator)
        i = torch.tensor(candidates)[pick]  # [B]
        rows = torch.arange(len(prompts))
        law_i = laws[rows, i.to(laws.device)].float().cpu()
        new = torch.multinomial(law_i, 1, generator=generator)[:, 0]
        changed = tokens.clone()
        changed[rows, i] = new
        moved = forced_laws(model, prompts, changed, sampling, raw=False).sampled
        for d in distances:
            j = i + d
            ok = (j < len(free)) & free[j.clamp(max=len(free) - 1)]
            jj = j.clamp(max=len(free) - 1).to(laws.device)
            tv = 0.5 * (laws[rows, jj] - moved[rows, jj]).abs().sum(-1).cpu().numpy()
            sums[d] += np.where(ok.numpy(), tv, 0.0)
            counts[d] += ok.numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return {d: sums[d] / counts[d] for d in distances}


@dataclass
class MethodCounts:
    """Per-prompt forwards of one method run, and every forward's accept length (prefill excluded)."""

    ar_steps: np.ndarray  # [B]
    nfe: np.ndarray  # [B]
    accept_lens: np.ndarray  # [sum of forwards - B]

    @property
    def step_compression(self) -> float:
        return float(self.ar_steps.sum() / self.nfe.sum())

    def accept_hist(self, window: int) -> list[float]:
        """[P(1), ..., P(window)]: the share of (non-prefill) forwards that committed k tokens."""
        counts = np.bincount(self.accept_lens, minlength=window + 1)[1 : window + 1]
        return (counts / max(counts.sum(), 1)).tolist()


def method_counts(results: list) -> MethodCounts:
    """From `generate()` results: per-prompt AR steps and forwards, and the accept lengths."""
    return MethodCounts(
        ar_steps=np.array([r.stats.ar_steps for r in results], dtype=np.float64),
        nfe=np.array([r.stats.nfe for r in results], dtype=np.float64),
        accept_lens=np.array([a for r in results for a in r.stats.accept_lens[1:]], dtype=np.int64),
    )


def bootstrap_ratio(
    num: np.ndarray, den: np.ndarray, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """sum(num) / sum(den) over prompts, with a 95% percentile interval from a bootstrap over prompts.

    num and den are per-prompt [B] arrays of the same prompts, so a ratio of two methods is paired.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(resamples, len(num)))
    ratios = num[idx].sum(1) / den[idx].sum(1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(num.sum() / den.sum()), float(low), float(high)


def mean_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-prompt values (NaN ignored) with a 95% bootstrap percentile interval."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(resamples, len(v)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(low), float(high)
