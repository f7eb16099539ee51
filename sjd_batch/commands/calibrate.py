"""`sjd-batch calibrate --model NAME [--prompts N] [--json FILE]`: does a model decode like a real one?

Measures, at the model's default sampling, on N captions from the model's own caption sampler
(generator seed `--caption-seed`, 999 = the held-out set of the shipped models) and one job seed, the
statistics of `sjd_batch.calibration`, and prints them beside the figures published for real AR
text-to-image models (Lumina-mGPT, Janus-Pro, LlamaGen):

| key | what |
|---|---|
| entropy_nats_mean | mean entropy (nats) of the sampled law over image tokens, teacher-forced on AR samples |
| entropy_raw_nats_mean | the same for the raw conditional law (no CFG, no truncation) |
| top1_below_5pct | share of image tokens whose sampled-law top-1 probability is below 0.05 |
| sjd_compression_by_window | SJD step compression (AR forwards / SJD forwards) at windows 8, 16, 32, 64 |
| accept_len_hist | [P(1), P(2), ...]: share of SJD forwards (window 16, prefill excluded) that commit k |
| mc_gain_l64 | mc-sjd ÷ sjd step compression at window 64 |
| vertical_gain | sjd with vertical init ÷ sjd with random init, window 16 |
| tv_by_distance | TV of token j's law when token j-d is redrawn from its own law, d = 1, 2, 3, 5, 10, 15 |
| tv_above | the same for the token straight above (d = the layout's row stride) |

`intervals` holds 95% bootstrap intervals (over prompts; paired for ratios). The JSON also records the
command, the git commit, the prompts and seeds. Every method run uses `sjd_batch.generate`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from sjd_batch import calibration as cal
from sjd_batch.api import generate
from sjd_batch.commands.bench import bench_prompts
from sjd_batch.commands.eval import sampling_overrides
from sjd_batch.models.loading import load_model

WINDOWS = (8, 16, 32, 64)
DISTANCES = (1, 2, 3, 5, 10, 15)
HELDOUT_SEED = 999

# (label, what real models show, test of a measured value): the targets, from the published
# figures (LlamaGen entropy: arXiv 2510.09012 Table 4; top-1: the GSD paper; compression: Lumina-mGPT
# and Janus-Pro in the SJD, SJD-PAC and MC-SJD papers; accept lengths and TV: SJD-PAC's figures).
TARGETS: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "entropy_nats_mean": ("4-6 (real: 4.4-6.9)", lambda r: 4 <= r["entropy_nats_mean"] <= 6),
    "top1_below_5pct": (">= 0.5 (real: 0.5-0.95)", lambda r: r["top1_below_5pct"] >= 0.5),
    "sjd_compression_w16": ("1.9-2.6 (real: 1.8-2.3)",
                            lambda r: 1.9 <= r["sjd_compression_by_window"]["16"] <= 2.6),
    "w64_over_w16": ("<= 1.15 (real: plateau)", lambda r: r["w64_over_w16"] <= 1.15),
    "accept_len_p1": ("0.40-0.60 (real: 0.49)", lambda r: 0.40 <= r["accept_len_hist"][0] <= 0.60),
    "mc_gain_l64": (">= 1.6 (real: 1.8-2.1)", lambda r: r["mc_gain_l64"] >= 1.6),
    "vertical_gain": ("<= 1.15 (real: 1.05-1.1)", lambda r: r["vertical_gain"] <= 1.15),
    "tv_d1": (">= 0.2 (real: 0.32)", lambda r: r["tv_by_distance"]["1"] >= 0.2),
    "tv_d3_plus": ("<= 0.06 (real: 0.06, 0.04, 0.024)",
                   lambda r: all(r["tv_by_distance"][str(d)] <= 0.06 for d in DISTANCES if d >= 3)),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="any registered model or source (see `sjd-batch models`)")
    parser.add_argument("--prompts", type=int, default=64, help="captions (the targets are set for >= 512)")
    parser.add_argument("--caption-seed", type=int, default=HELDOUT_SEED,
                        help="seed of the model's caption sampler (999: the shipped models' held-out set)")
    parser.add_argument("--seed", type=int, default=0, help="job seed, shared by every run")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tv-positions", type=int, default=4,
                        help="redrawn positions per sample for tv_by_distance (one forward each)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    overrides = (("--cfg-scale", float), ("--top-k", int), ("--top-p", float), ("--temperature", float))
    for flag, kind in overrides:
        parser.add_argument(flag, type=kind, default=None,
                            help="override the model's default sampling (to compare settings)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this file")


def progress(message: str, started: float) -> None:
    """One line on stderr per finished part: a 512-caption calibration runs for an hour or more."""
    print(f"calibrate: {message} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)


def law_section(model, prompts: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    """AR samples, then teacher-forced entropy, top-1 and TV-by-distance statistics."""
    sampling = model.default_sampling
    gen = torch.Generator().manual_seed(args.seed)
    offsets = cal.image_offsets(model)
    # plus the token straight above (d = row stride): in a 16-wide layout d = 15 and 16 are upper
    # neighbours too, while on Lumina-mGPT (48 wide) every d <= 15 is in the same row
    above = model.layout.row_stride
    distances = tuple(sorted({*DISTANCES, above}))
    stats, tvs = [], {d: [] for d in distances}
    started = time.perf_counter()
    for start in range(0, len(prompts), args.batch_size):
        batch = prompts[start : start + args.batch_size]
        ids = [str(start + i) for i in range(len(batch))]
        results = generate(model, batch, method="ar", seed=args.seed, batch_size=len(batch),
                           sample_ids=ids, decode_images=False)
        tokens = torch.stack([r.tokens for r in results])
        laws = cal.forced_laws(model, batch, tokens, sampling, raw=True)
        stats.append(cal.law_stats(laws, offsets))
        tv = cal.tv_by_distance(model, batch, tokens, laws.sampled, sampling, distances,
                                args.tv_positions, gen)
        for d in distances:
            tvs[d].append(tv[d])
        progress(f"AR samples and their laws, {start + len(batch)}/{len(prompts)} captions", started)
    fields = {"entropy_nats_mean": "entropy", "entropy_raw_nats_mean": "entropy_raw",
              "top1_below_5pct": "top1_below", "top1_below_5pct_raw": "top1_below_raw"}
    values, intervals = {}, {}
    for key, attr in fields.items():
        mean, low, high = cal.mean_interval(np.concatenate([getattr(s, attr) for s in stats]))
        values[key], intervals[key] = mean, [low, high]
    values["tv_by_distance"], intervals["tv_by_distance"] = {}, {}
    for d in distances:
        mean, low, high = cal.mean_interval(np.concatenate(tvs[d]))
        if d == above:
            values["tv_above"], intervals["tv_above"] = mean, [low, high]
        if d not in DISTANCES:
            continue
        values["tv_by_distance"][str(d)], intervals["tv_by_distance"][str(d)] = mean, [low, high]
    return values, intervals


def method_section(model, prompts: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    """SJD at every window, MC-SJD at 64 and SJD with vertical init at 16: forwards and accept lengths."""
    runs: dict[str, cal.MethodCounts] = {}
    started, total = time.perf_counter(), len(WINDOWS) + 2

    def run(label: str, method: str, **params: Any) -> cal.MethodCounts:
        results = generate(model, prompts, method=method, seed=args.seed, batch_size=args.batch_size,
                           decode_images=False, **params)
        runs[label] = cal.method_counts(results)
        progress(f"{label} on {len(prompts)} captions, run {len(runs)}/{total}", started)
        return runs[label]

    for w in WINDOWS:
        run(f"sjd@{w}", "sjd", window=w)
    run("mc-sjd@64", "mc-sjd", window=64)
    run("sjd-vertical@16", "sjd", window=16, init="vertical")
    values: dict[str, Any] = {"sjd_compression_by_window": {}}
    intervals: dict[str, Any] = {"sjd_compression_by_window": {}}
    for w in WINDOWS:
        c = runs[f"sjd@{w}"]
        mean, low, high = cal.bootstrap_ratio(c.ar_steps, c.nfe)
        values["sjd_compression_by_window"][str(w)] = mean
        intervals["sjd_compression_by_window"][str(w)] = [low, high]
    values["accept_len_hist"] = runs["sjd@16"].accept_hist(16)
    # each gain is (AR / method forwards) ÷ (AR / base forwards) = base forwards / method forwards
    for key, better, base in (("mc_gain_l64", "mc-sjd@64", "sjd@64"),
                              ("vertical_gain", "sjd-vertical@16", "sjd@16"),
                              ("w64_over_w16", "sjd@64", "sjd@16")):
        mean, low, high = cal.bootstrap_ratio(runs[base].nfe, runs[better].nfe)
        values[key], intervals[key] = mean, [low, high]
    return values, intervals


def provenance(args: argparse.Namespace) -> dict[str, Any]:
    """The command, the git commit (when run from a checkout) and the protocol."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    return {"command": "sjd-batch calibrate " + " ".join(sys.argv[2:]), "commit": commit, "dirty": dirty,
            "model": args.model, "prompts": args.prompts, "caption_seed": args.caption_seed,
            "seed": args.seed, "batch_size": args.batch_size, "tv_positions": args.tv_positions,
            "threads": args.threads}


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Every statistic, its interval and the provenance, as one JSON-able dict."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    model.default_sampling = replace(model.default_sampling, **sampling_overrides(args))  # this run only
    prompts = bench_prompts(model, args.prompts, args.caption_seed)
    laws, law_ci = law_section(model, prompts, args)
    methods, method_ci = method_section(model, prompts, args)
    return {**laws, **methods, "intervals": {**law_ci, **method_ci},
            "sampling": vars(model.default_sampling), **provenance(args),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(result: dict[str, Any]) -> str:
    """The measured statistics beside the targets, as a Markdown table."""
    ci = result["intervals"]
    comp, tv = result["sjd_compression_by_window"], result["tv_by_distance"]

    def fmt(v: float, interval: list[float] | None = None) -> str:
        return f"{v:.3f}" + (f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")

    rows = [
        ("entropy_nats_mean", "sampled-law entropy (nats)",
         fmt(result["entropy_nats_mean"], ci["entropy_nats_mean"])),
        ("", "raw-law entropy (nats)", fmt(result["entropy_raw_nats_mean"], ci["entropy_raw_nats_mean"])),
        ("top1_below_5pct", "top-1 < 0.05", fmt(result["top1_below_5pct"], ci["top1_below_5pct"])),
        ("", "SJD compression, window 8/16/32/64",
         " / ".join(fmt(comp[str(w)]) for w in WINDOWS)),
        ("sjd_compression_w16", "SJD compression, window 16",
         fmt(comp["16"], ci["sjd_compression_by_window"]["16"])),
        ("w64_over_w16", "SJD window 64 ÷ window 16", fmt(result["w64_over_w16"], ci["w64_over_w16"])),
        ("accept_len_p1", "accept length P(1), P(2), P(3), P(4)",
         ", ".join(f"{p:.3f}" for p in result["accept_len_hist"][:4])),
        ("mc_gain_l64", "mc-sjd ÷ sjd, window 64", fmt(result["mc_gain_l64"], ci["mc_gain_l64"])),
        ("vertical_gain", "vertical ÷ random init, window 16",
         fmt(result["vertical_gain"], ci["vertical_gain"])),
        ("tv_d1", "TV by distance d = 1", fmt(tv["1"], ci["tv_by_distance"]["1"])),
        ("tv_d3_plus", "TV at d = 2, 3, 5, 10, 15", ", ".join(f"{tv[str(d)]:.3f}" for d in DISTANCES[1:])),
        ("", "TV of the token straight above (d = row stride)", fmt(result["tv_above"], ci["tv_above"])),
    ]
    lines = ["| statistic | measured (95% interval) | target | met |", "|---|---|---|---|"]
    for key, label, measured in rows:
        target, test = TARGETS.get(key, ("", None))
        met = "" if test is None else ("yes" if test(result) else "no")
        lines.append(f"| {label} | {measured} | {target} | {met} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.prompts < 1:
        print("sjd-batch calibrate: error: --prompts must be >= 1", file=sys.stderr)
        return 2
    result = calibrate(args)
    print(f"{args.model}: {args.prompts} captions (caption seed {args.caption_seed}), job seed {args.seed}, "
          f"sampling {result['sampling']} (overrides: {sampling_overrides(args) or 'none'}), "
          f"{result['seconds']} s")
    print(table(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0
