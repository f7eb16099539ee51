"""`sjd-batch project [--tune TUNE.json] [--bench BENCH.json ...]`: the GPU projection table (a projection,
not a measurement: `sjd_batch/projection.py` says what it is computed from).

Step compressions come from files that `autotune` and `bench` wrote on a shipped model: `autotune`'s
calibration gives c(W) of its method at every window it tried (the window with the lowest projected
latency is taken per GPU and family), `bench` gives each method's c at its own window (and, where it
recorded it, the tokens a row feeds each forward: a draft tree's forward is wider than its window and is
priced so). `--bench` may be given more than once. `ar` has c = 1 at window 1. "Best lossless" is the
lossless method setting with the lowest projected latency.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from sjd_batch.projection import ARCHS, GPUS, Projected, project

# exact in law (docs/methods.md); `jacobi` is greedy-only, `ar` the base
LOSSLESS = ("sjd", "sjd-vp", "mc-sjd", "mc-sjd-vp", "sjd-pac")
Setting = tuple[str, int, float, int]  # method label, window, step compression, tokens per forward


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tune", default="",
                        help="JSON of `sjd-batch autotune` (c per window of its method); without it the "
                             "middle columns show plain `sjd` from the bench files")
    parser.add_argument("--bench", action="append", default=[],
                        help="JSON of `sjd-batch bench` (other methods' c); may be repeated")
    parser.add_argument("--gpus", default="H100,H200")
    parser.add_argument("--json", default="", help="also write the projection to this JSON file")


def settings(tune: dict[str, Any] | None, benches: list[dict[str, Any]]) -> list[Setting]:
    """(method, window, step compression, tokens per forward) of every measured setting; ar first."""
    out: list[Setting] = [("ar", 1, 1.0, 1)]
    if tune:
        out += [(tune["method"], c["window"], c["compression"], c["window"]) for c in tune["calibration"]
                if c["window"] > 1]
    for row in (r for bench in benches for r in bench.get("results", [])):
        method = row["method"].split(":")[0]
        if method in LOSSLESS and not row.get("params", {}).get("vp_lossy") and "step_compression" in row:
            window = int(row["params"].get("window", 16))
            width = math.ceil(row.get("tokens_per_forward") or window)
            out.append((row["method"], window, row["step_compression"], width))
    return out


def table(
    tune: dict[str, Any] | None, benches: list[dict[str, Any]], gpus: list[str]
) -> list[dict[str, Any]]:
    """Per family and GPU: ar, the tuned method (plain `sjd` without a tune file) at its best window, and
    the best lossless setting."""
    rows = []
    options = settings(tune, benches)
    reference = tune["method"] if tune else "sjd"
    if not any(m.split(":")[0] == reference for m, *_ in options):
        raise ValueError(f"no `{reference}` setting in the files given: add a bench file with {reference}")
    for arch in ARCHS.values():
        for gpu in gpus:
            runs = [project(arch, GPUS[gpu], m, w, c, width=t) for m, w, c, t in options]
            ar = runs[0]
            tuned = min((r for r in runs if r.method.split(":")[0] == reference),
                        key=lambda r: (r.latency_s, -r.images_per_s))
            best = min(runs[1:], key=lambda r: (r.latency_s, -r.images_per_s))  # ties: more images/s
            rows.append({"family": arch.name, "gpu": gpu, "tokens": arch.tokens,
                         "ar": _cell(ar), "tuned": _cell(tuned), "best": _cell(best)})
    return rows


def _cell(p: Projected) -> dict[str, Any]:
    return {"method": p.method, "window": p.window, "compression": round(p.compression, 3),
            "latency_s": p.latency_s, "best_batch": p.best_batch, "images_per_s": p.images_per_s}


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| family (tokens) | GPU | ar: s at batch 1 | ar: img/s (batch) | {m} W: s at batch 1 | "
            "{m}: img/s (batch) | best lossless (W, c) | its s at batch 1 | its img/s (batch) |")
    lines = [head.format(m=rows[0]["tuned"]["method"]), "|" + "---|" * 9]
    for r in rows:
        ar, t, b = r["ar"], r["tuned"], r["best"]
        lines.append(
            f"| {r['family']} ({r['tokens']}) | {r['gpu']} | {ar['latency_s']:.2f} | "
            f"{ar['images_per_s']:.2f} ({ar['best_batch']}) | {t['latency_s']:.2f} (W {t['window']}) | "
            f"{t['images_per_s']:.2f} ({t['best_batch']}) | {b['method']} ({b['window']}, "
            f"{b['compression']:.2f}) | {b['latency_s']:.2f} | {b['images_per_s']:.2f} ({b['best_batch']}) |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    tune = None
    if args.tune:
        with open(args.tune) as f:
            tune = json.load(f)
    benches = []
    for path in args.bench:
        with open(path) as f:
            benches.append(json.load(f))
    gpus = [g.strip() for g in args.gpus.split(",")]
    unknown = [g for g in gpus if g not in GPUS]
    if unknown:
        print(f"sjd-batch project: unknown GPU(s) {unknown}; known: {sorted(GPUS)}", file=sys.stderr)
        return 2
    try:
        rows = table(tune, benches, gpus)
    except ValueError as e:
        print(f"sjd-batch project: {e}", file=sys.stderr)
        return 2
    print("PROJECTION (roofline forward cost x measured step compression; not a GPU measurement)")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            payload = {"kind": "projection", "tune": args.tune, "bench": args.bench, "rows": rows}
            json.dump(payload, f, indent=1)
    return 0
