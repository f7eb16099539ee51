"""Exact-enumeration harness for losslessness (docs/design.md, section 7).

The exact joint law of AR sampling is computed by teacher-forcing every possible sequence through
the model (the AR path, float64); samplers are then compared to it in total variation.

Threshold: with K outcomes of positive probability and N samples, E[TV] <= 1/2 sum sqrt(p(1-p)/N)
<= sqrt(K / (4N)) (Cauchy-Schwarz), and TV moves by at most 1/N per sample, so by McDiarmid
Pr[TV - E TV >= eps] <= exp(-2 N eps^2). A correct sampler passes TV <= tau(N) =
sqrt(K/(4N)) + sqrt(ln(1/delta) / (2N)) except with probability delta = 1e-6.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import torch

from sjd_batch.decoding import SamplingConfig, decode
from sjd_batch.decoding.methods import DecodeConfig
from sjd_batch.decoding.score import teacher_forced_laws
from tests.decoding.toys import seeds_for

DELTA = 1e-6


def full_sequences(model) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Every assignment of image codes to the free slots, with forced tokens filled in: [K, T]."""
    layout = model.layout
    free = layout.code_offsets()
    codes = range(layout.image_start, layout.image_end)
    combos = list(itertools.product(codes, repeat=len(free)))
    seqs = torch.tensor([layout.forced] * len(combos), dtype=torch.long)
    seqs[:, free] = torch.tensor(combos)
    return combos, seqs


def exact_law(model, prompt: str, sampling: SamplingConfig) -> dict[tuple[int, ...], float]:
    """Pr(codes) = prod_a P(x_a | x_<a) by teacher forcing, with the same `processed_probs` as AR."""
    combos, seqs = full_sequences(model)
    prefix = model.encode([prompt] * len(combos), None, with_uncond=sampling.uses_cfg)
    p = teacher_forced_laws(model, prefix, seqs, sampling)  # [K, T, V]
    probs = p.gather(-1, seqs[..., None]).squeeze(-1).prod(-1)
    return dict(zip(combos, probs.tolist(), strict=True))


def sample_codes(
    model, prompts: list[str], n: int, sampling, config: DecodeConfig, tag: str
) -> list[Counter]:
    """n samples per prompt, all prompts interleaved in one batch, one seed per sample."""
    rows = [prompts[i % len(prompts)] for i in range(n * len(prompts))]
    prefix = model.encode(rows, None, with_uncond=sampling.uses_cfg)
    out = decode(model, prefix, seeds_for([f"{tag}-{i}" for i in range(len(rows))]), sampling, config)
    free = model.layout.code_offsets()
    counts = [Counter() for _ in prompts]
    for i, row in enumerate(out.tokens[:, free].tolist()):
        counts[i % len(prompts)][tuple(row)] += 1
    return counts


def total_variation(counts: Counter, exact: dict[tuple[int, ...], float]) -> float:
    n = sum(counts.values())
    keys = set(exact) | set(counts)
    return 0.5 * sum(abs(counts.get(k, 0) / n - exact.get(k, 0.0)) for k in keys)


def tv_bound(exact: dict[tuple[int, ...], float], n: int) -> float:
    support = sum(1 for p in exact.values() if p > 0)
    return math.sqrt(support / (4 * n)) + math.sqrt(math.log(1 / DELTA) / (2 * n))
