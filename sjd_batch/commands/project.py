"""`sjd-batch project [--tune TUNE.json] [--bench BENCH.json ...]`: the GPU projection table (a projection,
not a measurement: `sjd_batch/projection.py` says what it is computed from).

Step compressions come from files that `autotune` and `bench` wrote on a shipped model: `autotune`'s
calibration gives c(W) of its method at every window it tried (the window with the lowest projected
latency is taken per GPU and family), `bench` gives each method's c at its own window (and, where it
recorded it, the tokens a row feeds each forward: a draft tree's forward is wider than its window and is
priced so). `--bench` may be given more than once. `ar` has c = 1 at window 1. "Best lossless" is the
lossless method setting with the lowest projected latency.

`--forward` (repeatable) takes the `forward-<family>.json` files that `bench-gpu` wrote on a GPU: their
measured forward times replace the roofline for that family on that GPU (the row says which).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from sjd_batch.projection import ARCHS, GPUS, MeasuredForwards, Projected, project

# exact in law (docs/methods.md); `jacobi` is greedy-only, `ar` the base
LOSSLESS = ("sjd", "sjd-vp", "mc-sjd", "mc-sjd-vp", "sjd-pac")
Setting = tuple[str, int, float, int]  # method label, window, step compression, tokens per forward


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tune", default="",
                        help="JSON of `sjd-batch autotune` (c per window of its method); without it the "
                             "middle columns show plain `sjd` from the bench files")
    parser.add_argument("--bench", action="append", default=[],
                        help="JSON of `sjd-batch bench` (other methods' c); may be repeated")
    parser.add_argument("--forward", action="append", default=[],
                        help="forward-<family>.json of `sjd-batch bench-gpu` (forward times measured on a "
                             "GPU, replacing the roofline for that family and GPU); may be repeated")
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


def measured_forwards(path: str, data: dict[str, Any]) -> MeasuredForwards:
    """A `bench-gpu` forward file as MeasuredForwards; a ValueError names the file and what is wrong."""
    family = data.get("arch", {}).get("name") if isinstance(data.get("arch"), dict) else None
    if family not in ARCHS:
        raise ValueError(f"{path}: arch.name {family!r} is not one of {sorted(ARCHS)}")
    device = str(data.get("gpu", ""))
    gpu = next((key for key in GPUS if key in device.upper()), None)
    if gpu is None:
        raise ValueError(f"{path}: field 'gpu' is {device!r}; expected a GPU whose name holds one of "
                         f"{sorted(GPUS)} (bench-gpu writes the CUDA device name there)")
    seconds = {}
    for key, ms in (data.get("forward_ms") or {}).items():
        window, _, batch = str(key).partition(",")
        if not (window.isdigit() and batch.isdigit()) or not isinstance(ms, (int, float)) or ms <= 0:
            raise ValueError(f"{path}: forward_ms entry {key!r}: {ms!r}; expected \"window,batch\": ms > 0")
        seconds[(int(window), int(batch))] = ms / 1e3
    if not any(b == 1 for _, b in seconds):
        raise ValueError(f"{path}: no forward measured at batch 1 (forward_ms keys are \"window,batch\")")
    return MeasuredForwards(family, gpu, seconds, path)


def table(
    tune: dict[str, Any] | None, benches: list[dict[str, Any]], gpus: list[str],
    measured: list[MeasuredForwards] | None = None,
) -> list[dict[str, Any]]:
    """Per family and GPU: ar, the tuned method (plain `sjd` without a tune file) at its best window, and
    the best lossless setting. `measured` forward times replace the roofline where they apply."""
    rows = []
    options = settings(tune, benches)
    reference = tune["method"] if tune else "sjd"
    if not any(m.split(":")[0] == reference for m, *_ in options):
        raise ValueError(f"no `{reference}` setting in the files given: add a bench file with {reference}")
    found = {(m.arch, m.gpu): m for m in measured or []}
    for arch in ARCHS.values():
        for gpu in gpus:
            forwards = found.get((arch.name, gpu))
            runs = [project(arch, GPUS[gpu], m, w, c, width=t, measured=forwards) for m, w, c, t in options]
            ar = runs[0]
            tuned = min((r for r in runs if r.method.split(":")[0] == reference),
                        key=lambda r: (r.latency_s, -r.images_per_s))
            best = min(runs[1:], key=lambda r: (r.latency_s, -r.images_per_s))  # ties: more images/s
            rows.append({"family": arch.name, "gpu": gpu, "tokens": arch.tokens, "forward": ar.forward,
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
            f"| {r['family']} ({r['tokens']}) | {_gpu_cell(r)} | {ar['latency_s']:.2f} | "
            f"{ar['images_per_s']:.2f} ({ar['best_batch']}) | {t['latency_s']:.2f} (W {t['window']}) | "
            f"{t['images_per_s']:.2f} ({t['best_batch']}) | {b['method']} ({b['window']}, "
            f"{b['compression']:.2f}) | {b['latency_s']:.2f} | {b['images_per_s']:.2f} ({b['best_batch']}) |")
    return "\n".join(lines)


def _gpu_cell(row: dict[str, Any]) -> str:
    return f"{row['gpu']} (measured forward)" if row.get("forward") == "measured" else row["gpu"]


def _load(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as JSON ({e})") from e


def main(args: argparse.Namespace) -> int:
    gpus = [g.strip() for g in args.gpus.split(",")]
    unknown = [g for g in gpus if g not in GPUS]
    if unknown:
        print(f"sjd-batch project: unknown GPU(s) {unknown}; known: {sorted(GPUS)}", file=sys.stderr)
        return 2
    try:
        tune = _load(args.tune) if args.tune else None
        benches = [_load(path) for path in args.bench]
        measured = [measured_forwards(path, _load(path)) for path in args.forward]
        rows = table(tune, benches, gpus, measured)
    except ValueError as e:
        print(f"sjd-batch project: {e}", file=sys.stderr)
        return 2
    source = "measured forward times where marked, else a " if measured else "a "
    print(f"PROJECTION ({source}roofline forward cost x measured step compression; not a GPU measurement "
          "of the decode)")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            payload = {"kind": "projection", "tune": args.tune, "bench": args.bench, "forward": args.forward,
                       "rows": rows}
            json.dump(payload, f, indent=1)
    return 0
