"""`sjd-batch eval --model shapes-t2i --methods ar,sjd,sjd-vp,mc-sjd --prompts N`: quality per method.

All methods decode the same N held-out generator captions (generator seed 999, or `--caption-seed`
for tuning on other captions) with the same job seed and the model's default sampling (or the
`--cfg-scale/--top-k/--top-p/--temperature` overrides). Per method it reports:
- adherence: the fraction of images the `shapes` checker accepts (shape, colour and cell of every
  object, nothing extra), its 95% Wilson interval, and the per-attribute rates (colour, shape, cells)
  that say how the rest failed; plus step compression (AR forwards / method forwards) and accept length;
- two-sample tests against AR: permutation tests of the total-variation distance between the two
  methods' pooled histograms of (a) detected object attributes (colour, shape, size, cell) and (b)
  image codes. A lossless method should not be distinguishable (p not small);
- a Fréchet distance to AR's images in a 36-d feature space: per 3×3 grid cell, the fraction of
  object pixels and the mean RGB (/255) of those pixels, as the checker defines object pixels;
- the model's own test (`decoding/score.py`), by far the most powerful: per image, the mean over its
  image codes of -log P_t(x_t) - H(P_t), with P_t the sampling law AR uses (teacher-forced; the
  model's default sampling plus eval's overrides, whatever the method's own parameters). It has mean 0
  under any exact sampler. `p_nll_gap` tests the mean against 0 (z-test over images); `p_nll_gap_vs_ar`
  compares it with the independent AR run, caption by caption (sign-flip permutation test). Both have
  a false-alarm rate equal to the threshold for a lossless method (p is uniform under the null);
- off-support tokens: tokens the sampling law gives probability 0. Must be 0 for every method.

The tests and the Fréchet distance compare each method with a *second* AR run on the same captions
under an independent job seed (`--test-seed`). Against AR at the same seed, the two image sets would
share random streams, and the test would be conservative (p near 1 whatever the law). With
independent draws, the two images of a caption are exchangeable under the null, so swapping them
within captions is an exact permutation test. The `ar` row tests AR against that independent AR run:
its p-values and Fréchet distance are the noise floor.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from sjd_batch.api import generate, split_params
from sjd_batch.commands.measure import MethodSpec, parse_methods
from sjd_batch.decoding.score import score_sequences, teacher_forced_laws
from sjd_batch.models.loading import load_model
from sjd_batch.training.shapes.checker import cell_regions, check, detect, object_mask
from sjd_batch.training.shapes.data import COLORS, GRID, SHAPES, SIZES, make_batch

HELDOUT_SEED = 999


@dataclass
class MethodRun:
    """What one method produced on the prompt set."""

    method: str
    pixels: np.ndarray  # [N, 64, 64, 3] uint8
    codes: np.ndarray  # [N, K] code counts per image
    attributes: np.ndarray  # [N, A] detected attribute counts per image
    ok: np.ndarray  # [N] bool
    attribute_ok: dict[str, float]  # color_ok / shape_ok / cells_ok: fraction of images right
    nll_gap: np.ndarray  # [N] per image: mean over codes of -log P(x) - H(P) (0 in mean if exact)
    off_support: int  # tokens of probability 0 under the sampling law
    nfe: int
    accept_len: float
    seconds: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument("--methods", default="ar,sjd,sjd-vp,mc-sjd",
                        help="comma-separated, with optional parameters as in `bench` "
                             "(mc-sjd:init=vertical); ar is always run")
    parser.add_argument("--prompts", type=int, default=64, help="held-out captions (generator seed 999)")
    parser.add_argument("--seed", type=int, default=0, help="job seed, shared by all methods")
    parser.add_argument("--test-seed", type=int, default=None,
                        help="job seed of the independent AR run the two-sample tests compare with "
                             "(default: --seed + 1)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch CPU threads (1 keeps a core free on a 2-core machine)")
    parser.add_argument("--caption-seed", type=int, default=HELDOUT_SEED,
                        help="generator seed of the captions (999: the held-out evaluation set)")
    overrides = (("--cfg-scale", float), ("--top-k", int), ("--top-p", float), ("--temperature", float))
    for flag, kind in overrides:
        parser.add_argument(flag, type=kind, default=None, help="override the model's default sampling")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def attribute_vector(pixels: np.ndarray) -> np.ndarray:
    """Counts of detected colours, shapes, sizes and occupied cells: [8 + 4 + 2 + 9]."""
    labels = [*COLORS, *SHAPES, *SIZES, *range(GRID * GRID)]
    index = {k: i for i, k in enumerate(labels)}
    v = np.zeros(len(labels))
    for d in detect(pixels):
        for key in (d.color, d.shape, d.size, d.cell):
            if key in index:
                v[index[key]] += 1
    return v


def cell_features(pixels: np.ndarray) -> np.ndarray:
    """The Fréchet feature: per cell, object-pixel fraction and their mean RGB / 255 -> [36]."""
    mask = object_mask(pixels).reshape(-1)
    flat = pixels.reshape(-1, 3).astype(np.float64) / 255
    out = []
    for region in cell_regions():
        m = mask & region
        out += [m.sum() / region.sum(), *(flat[m].mean(0) if m.any() else np.zeros(3))]
    return np.asarray(out)


def sampling_overrides(args: argparse.Namespace) -> dict[str, float]:
    """The sampling flags that were given (the rest stay at the model's defaults)."""
    keys = ("cfg_scale", "top_k", "top_p", "temperature")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sane at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def run_method(
    model, spec: MethodSpec, captions: list[str], args: argparse.Namespace, seed: int
) -> MethodRun:
    """Decode all captions with one method (and its parameters) under job seed `seed`; collect statistics."""
    params = sampling_overrides(args) | dict(spec.params)  # a method's own sampling wins (controls)
    t0 = time.perf_counter()
    results = generate(model, captions, method=spec.method, seed=seed, batch_size=args.batch_size, **params)
    seconds = time.perf_counter() - t0
    tokens = torch.stack([r.tokens for r in results])
    gap, off_support = model_scores(model, captions, tokens, args)
    pixels = np.stack([r.pixels.numpy() for r in results])
    codes = model.codes(torch.stack([r.tokens for r in results])).reshape(len(results), -1)
    counts = np.stack([np.bincount(c.numpy(), minlength=model.vocab.num_codes) for c in codes])
    verdicts = [check(p, c) for p, c in zip(pixels, captions, strict=True)]

    def rate(field: str) -> float:
        return float(np.mean([getattr(v, field) for v in verdicts]))

    return MethodRun(
        method=spec.label, pixels=pixels, codes=counts,
        attributes=np.stack([attribute_vector(p) for p in pixels]),
        ok=np.array([v.ok for v in verdicts]),
        attribute_ok={"color_ok": rate("color_ok"), "shape_ok": rate("shape_ok"),
                      "cells_ok": rate("position_ok")},
        nll_gap=gap,
        off_support=off_support,
        nfe=sum(r.stats.nfe for r in results),
        accept_len=float(np.mean([r.stats.accept_len_mean for r in results])),
        seconds=seconds,
    )


def model_scores(
    model, captions: list[str], tokens: torch.Tensor, args: argparse.Namespace
) -> tuple[np.ndarray, int]:
    """Per-image NLL gap [N] and the off-support token count, against the reference sampling law
    (the model's defaults plus eval's overrides), teacher-forced in batches."""
    sampling, _ = split_params(model, "ar", sampling_overrides(args))
    free = torch.tensor(model.layout.forced) < 0
    gaps, off = [], 0
    for start in range(0, len(captions), args.batch_size):
        chunk = slice(start, start + args.batch_size)
        prefix = model.encode(captions[chunk], None, with_uncond=sampling.uses_cfg)
        laws = teacher_forced_laws(model, prefix, tokens[chunk].to(model.device), sampling)
        score = score_sequences(laws, tokens[chunk], free)
        gaps.append(score.nll_gap.double().cpu().numpy())
        off += int(score.off_support.sum())
    return np.concatenate(gaps), off


def mean_test(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, standard error, two-sided p of mean = 0) by the normal approximation over images."""
    n = len(x)
    se = float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    z = float(x.mean()) / se if se > 0 else 0.0
    return float(x.mean()), se, math.erfc(abs(z) / math.sqrt(2))


def sign_flip_test(d: np.ndarray, permutations: int, seed: int = 0) -> float:
    """Two-sided p that paired differences d [N] have mean 0 (each difference's sign is exchangeable
    under the null: the two images of a caption are independent draws from one law)."""
    gen = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = gen.choice([-1.0, 1.0], size=(permutations, len(d)))
    exceed = int((np.abs((signs * d).mean(1)) >= observed).sum())
    return (exceed + 1) / (permutations + 1)


def tv_permutation_test(
    a: np.ndarray, b: np.ndarray, permutations: int, seed: int = 0
) -> tuple[float, float]:
    """Paired two-sample permutation test on pooled histograms. a, b: [N, K] per-image counts.

    Row i of `a` and of `b` are independent draws for the same caption i. Under the null (one law)
    they are exchangeable, so each permutation swaps a random subset of pairs: an exact test that
    also keeps the captions balanced between the two sides.

    Returns:
        (total-variation distance between the pooled normalised histograms, permutation p-value).
    """
    if a.shape != b.shape:
        raise ValueError(f"paired test: both samples need one row per caption, got {a.shape} and {b.shape}")

    def tv(swap: np.ndarray) -> float:
        ha = np.where(swap[:, None], b, a).sum(0)
        hb = np.where(swap[:, None], a, b).sum(0)
        return 0.5 * float(np.abs(ha / max(ha.sum(), 1) - hb / max(hb.sum(), 1)).sum())

    observed = tv(np.zeros(len(a), dtype=bool))
    rng = np.random.default_rng(seed)
    exceed = sum(tv(rng.random(len(a)) < 0.5) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets x [N, D] and y [M, D]."""
    mx, my = x.mean(0), y.mean(0)
    sx, sy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr sqrt(Sx Sy) = sum of sqrt eigenvalues of Sx^1/2 Sy Sx^1/2 (symmetric PSD, so eigh is stable)
    w, v = np.linalg.eigh(sx)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ sy @ root), 0, None)).sum()
    return float(((mx - my) ** 2).sum() + np.trace(sx) + np.trace(sy) - 2 * cross)


def compare(ref: MethodRun, independent: MethodRun, run: MethodRun, permutations: int) -> dict[str, float]:
    """One method's row of the report: speed against AR at the same seed (`ref`), law against AR at an
    independent seed (`independent`)."""
    _, p_attr = tv_permutation_test(independent.attributes, run.attributes, permutations)
    tv_code, p_code = tv_permutation_test(independent.codes, run.codes, permutations)
    feats = [np.stack([cell_features(p) for p in r.pixels]) for r in (independent, run)]
    low, high = wilson(int(run.ok.sum()), len(run.ok))
    gap, gap_se, p_gap = mean_test(run.nll_gap)
    return {
        "adherence": float(run.ok.mean()),
        "adherence_low": low,
        "adherence_high": high,
        **run.attribute_ok,
        "step_compression": ref.nfe / run.nfe,
        "accept_len_mean": run.accept_len,
        "latency_speedup": ref.seconds / run.seconds,
        "p_attributes": p_attr,
        "p_codes": p_code,
        "tv_codes": tv_code,
        "frechet_cells": frechet(*feats),
        "nll_gap": gap,
        "nll_gap_se": gap_se,
        "p_nll_gap": p_gap,
        "p_nll_gap_vs_ar": sign_flip_test(run.nll_gap - independent.nll_gap, permutations),
        "off_support": float(run.off_support),
    }


def main(args: argparse.Namespace) -> int:
    """Run AR and every requested method on the same captions and seeds; print the comparison."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    captions = make_batch(args.caption_seed, 0, args.prompts)[1]
    ar, *others = parse_methods(args.methods, {"window": args.window})  # ar first, always
    test_seed = args.seed + 1 if args.test_seed is None else args.test_seed
    if test_seed == args.seed:
        print("sjd-batch eval: error: --test-seed must differ from --seed: the two-sample tests need "
              "independent draws", file=sys.stderr)
        return 2
    ref = run_method(model, ar, captions, args, args.seed)
    independent = run_method(model, ar, captions, args, test_seed)
    report = {"ar": compare(ref, independent, ref, args.permutations)}
    for spec in others:
        if spec.label != "ar":  # `ar:temperature=0.85` (a control) runs; plain ar is the reference
            run = run_method(model, spec, captions, args, args.seed)
            report[spec.label] = compare(ref, independent, run, args.permutations)
    if args.json:
        header = {"prompts": args.prompts, "seed": args.seed, "test_seed": test_seed, "window": args.window,
                  "caption_seed": args.caption_seed, "sampling": sampling_overrides(args)}
        print(json.dumps({**header, "methods": report}))
        return 0
    keys = list(report["ar"])
    print(f"{args.prompts} captions of generator seed {args.caption_seed}, job seed {args.seed}, window "
          f"{args.window}, sampling {sampling_overrides(args) or 'model defaults'}; two-sample tests and "
          f"Fréchet vs ar at job seed {test_seed}")
    width = max(10, *(len(m) for m in report))
    print(f"{'method':{width}s} " + " ".join(f"{k:>16s}" for k in keys))
    for m, row in report.items():
        print(f"{m:{width}s} " + " ".join(f"{row[k]:16.4f}" for k in keys))
    return 0
