"""`sjd-batch bench-modes`: the engine with and without inference mode, side by side on the same prompts.

The engine runs its steps under `torch.inference_mode` (decoding/inference.py). This measures what
that buys: per method, each round's prompts are decoded once in each mode (alternating which goes
first), the tokens of the two are checked equal, and the speed-up is the per-round ratio of wall
times (plain ÷ inference mode) with a 95% interval over the rounds. Engine overhead (decode wall
time ÷ the wall time of its forwards) is reported for both modes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from sjd_batch.commands.measure import Runner, parse_methods, ratio_interval
from sjd_batch.job import git_revision
from sjd_batch.models.loading import load_model
from sjd_batch.timing import bench_prompts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i", help="a registered name, family:source or folder")
    parser.add_argument("--methods", default="ar,sjd,mc-sjd", help="comma list of methods")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--round", type=int, default=16, help="prompts per round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=999, help="caption generator seed")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")


def measure_method(model: Any, label: str, prompts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """Per round: both modes on the same prompts, tokens checked equal; ratios over the rounds."""
    spec = next(s for s in parse_methods(label, {}) if s.label == label)
    runner = Runner(model, 0, args.batch_size)
    runner(spec, prompts[: args.batch_size], [f"warm{i}" for i in range(args.batch_size)])
    speedups, overheads = [], {True: [], False: []}
    before = getattr(model, "plain_tensors", False)
    try:
        for r in range(args.rounds):
            speedups.append(_round(model, runner, spec, prompts, r, args, overheads))
    finally:
        model.plain_tensors = before
    mean, low, high = ratio_interval(speedups)
    return {"method": label, "speedup": mean, "speedup_95": [low, high],
            "engine_overhead_inference": sum(overheads[True]) / args.rounds,
            "engine_overhead_plain": sum(overheads[False]) / args.rounds,
            "rounds": args.rounds, "prompts_per_round": args.round, "batch_size": args.batch_size}


def _round(model: Any, runner: Runner, spec: Any, prompts: list[str], r: int, args: argparse.Namespace,
           overheads: dict[bool, list[float]]) -> float:
    """Round r in both modes (alternating which goes first); the plain ÷ inference wall-time ratio."""
    chunk = prompts[r * args.round : (r + 1) * args.round]
    ids = [str(i) for i in range(r * args.round, (r + 1) * args.round)]
    runs = {}
    for inference in (r % 2 == 0, r % 2 == 1):
        model.plain_tensors = not inference  # the engine's switch (decoding/inference.py)
        runs[inference] = runner(spec, chunk, ids)
    for a, b in zip(runs[True].results, runs[False].results, strict=True):
        if not torch.equal(a.tokens, b.tokens):
            raise RuntimeError(f"{spec.label}: sample {a.sample_id} decoded differently in the two modes")
    for mode, run in runs.items():
        overheads[mode].append((run.wall_s - run.pixel_s) / run.forward_s)
    speedup = runs[False].wall_s / runs[True].wall_s
    print(f"{spec.label} round {r + 1}/{args.rounds}: {speedup:.3f}", file=sys.stderr, flush=True)
    return speedup


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    model = load_model(args.model)
    prompts = bench_prompts(model, args.round * args.rounds, args.seed)
    rows = [measure_method(model, m.strip(), prompts, args) for m in args.methods.split(",")]
    for row in rows:
        low, high = row["speedup_95"]
        print(f"{row['method']:<10} speed-up from inference mode {row['speedup']:.3f} [{low:.3f}, {high:.3f}]"
              f"  engine overhead {row['engine_overhead_plain']:.3f} -> "
              f"{row['engine_overhead_inference']:.3f}")
    if args.json:
        meta = {"command": "sjd-batch bench-modes " + " ".join(sys.argv[2:]), "model": args.model,
                "wall_s": time.time() - started, "torch": torch.__version__,
                "threads": torch.get_num_threads(), "git": git_revision()}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
