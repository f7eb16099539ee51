"""`sjd-batch autotune --model NAME`: the window and batch size with the most images/s on this machine.

It measures the forward time against window and batch, and the step compression and engine overhead
against window from a short calibration decode, prices every cell with the cost model of
`sjd_batch/tuning.py`, and says what it chose and why. `--verify N` then decodes N prompts with the
best speculative setting and the best AR setting side by side (interleaved rounds, 95% interval on the
images/s ratio), so the prediction is checked by a measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from sjd_batch import throughput
from sjd_batch.api import split_params
from sjd_batch.commands.bench import bench_prompts
from sjd_batch.commands.measure import MethodSpec, Runner, parse_methods, ratio_interval
from sjd_batch.job import git_revision
from sjd_batch.models.loading import load_model
from sjd_batch.tuning import DEFAULT_BATCHES, DEFAULT_WINDOWS, Candidate, TuneResult, tune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument("--method", default="sjd", help="the speculative method, `name[:key=value...]`")
    parser.add_argument("--windows", default=",".join(map(str, DEFAULT_WINDOWS)))
    parser.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCHES)))
    parser.add_argument("--prompts", type=int, default=8, help="calibration prompts per window")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per (window, batch)")
    parser.add_argument("--verify", type=int, default=0,
                        help="then decode this many prompts with the best speculative and the best AR "
                        "setting side by side (0: skip)")
    parser.add_argument("--round", type=int, default=0,
                        help="prompts per verification round (default 4 x batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default="", help="write everything measured and chosen to this file")


def print_result(result: TuneResult, out=sys.stdout) -> None:
    windows = sorted({int(k.split(",")[0]) for k in result.forward_ms})
    batches = sorted({int(k.split(",")[1]) for k in result.forward_ms})
    print("forward ms (rows: window, columns: batch)", file=out)
    print("window" + "".join(f"{b:>9}" for b in batches), file=out)
    for w in windows:
        cells = "".join(f"{result.forward_ms[f'{w},{b}']:>9.2f}" if f"{w},{b}" in result.forward_ms
                        else f"{'-':>9}" for b in batches)
        print(f"{w:>6}{cells}", file=out)
    print("\ncalibration: window, step compression, engine overhead, prefill ms, pixels ms", file=out)
    for c in result.calibration:
        print(f"{c.window:>6}{c.compression:>9.2f}{c.overhead:>9.2f}{1e3 * c.prefill_s:>9.2f}"
              f"{1e3 * c.pixel_s:>9.2f}", file=out)
    print("\npredicted images/s (rows: window, columns: batch)", file=out)
    for w in windows:
        row = {c.batch: c for c in result.candidates if c.window == w}
        cells = (f"{row[b].images_per_s:>9.2f}" if b in row else f"{'-':>9}" for b in batches)
        print(f"{w:>6}" + "".join(cells), file=out)
    print("\n" + result.why(), file=out)


def verify(model: Any, result: TuneResult, spec: MethodSpec, count: int, seed: int,
           round_size: int) -> dict[str, Any]:
    """Best speculative vs best AR setting, decoded side by side in interleaved rounds."""
    best, ar = result.best_speculative(), result.best("ar")
    prompts = bench_prompts(model, count, seed + 7)
    size = round_size or 4 * max(best.batch, ar.batch)
    runners = [(best, Runner(model, seed, best.batch), MethodSpec(spec.label, spec.method,
                                                                  {**spec.params, "window": best.window})),
               (ar, Runner(model, seed, ar.batch), MethodSpec("ar", "ar", {}))]
    for _, runner, s in runners:  # warm-up
        runner(s, prompts[: runner.batch_size], [f"w{i}" for i in range(runner.batch_size)])
    ratios, rates = [], {0: [0, 0.0], 1: [0, 0.0]}
    for start in range(0, count, size):
        chunk = prompts[start : start + size]
        ids = [str(i) for i in range(start, start + len(chunk))]
        runs = [runner(s, chunk, ids) for _, runner, s in runners]
        ratios.append(runs[0].images_per_s / runs[1].images_per_s)
        # minutes per round on a CPU: say where the check stands
        print(f"verify round {len(ratios)}/{-(-count // size)}: {runs[0].images_per_s:.2f} against "
              f"{runs[1].images_per_s:.2f} images/s (ratio {ratios[-1]:.2f})", flush=True)
        for i, run in enumerate(runs):
            rates[i][0] += len(run.results)
            rates[i][1] += run.wall_s
    mean, lo, hi = ratio_interval(ratios)
    return {"speculative": _describe(best, rates[0]), "ar": _describe(ar, rates[1]),
            "ratio": mean, "ratio_95": [lo, hi], "rounds": len(ratios), "prompts": count}


def _describe(c: Candidate, rate: list) -> dict[str, Any]:
    return {"method": c.method, "window": c.window, "batch": c.batch,
            "predicted_images_per_s": c.images_per_s,
            "measured_images_per_s": throughput.images_per_s(rate[0], rate[1])}


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    spec = parse_methods(args.method, {})[-1]
    windows = [int(w) for w in args.windows.split(",")]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    sampling, config = split_params(model, spec.method, spec.params)
    result = tune(model, sampling, config, bench_prompts(model, args.prompts, args.seed + 3), windows,
                  batches, repeats=args.repeats, label=spec.label)
    print_result(result)
    payload = {"meta": {"command": "sjd-batch autotune " + " ".join(sys.argv[2:]), "git": git_revision(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()}, **result.to_json()}
    if args.verify:
        check = verify(model, result, spec, args.verify, args.seed, args.round)
        s, a = check["speculative"], check["ar"]
        print(f"\nmeasured side by side on {check['prompts']} prompts ({check['rounds']} rounds): "
              f"{spec.label} window {s['window']} batch {s['batch']}: {s['measured_images_per_s']:.2f} "
              f"images/s; ar batch {a['batch']}: {a['measured_images_per_s']:.2f} images/s; ratio "
              f"{check['ratio']:.2f} [95%: {check['ratio_95'][0]:.2f}, {check['ratio_95'][1]:.2f}]")
        payload["verify"] = check
    payload["meta"]["wall_s"] = time.time() - started
    if args.json:
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"wrote {args.json}")
    return 0

