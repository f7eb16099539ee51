"""`sjd-batch generate`: a few images in-process (no Ray, no job file), saved as PNGs, with statistics."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from sjd_batch.api import generate
from sjd_batch.commands.measure import parse_value
from sjd_batch.models.loading import load_model

DEFAULT_PROMPTS = [
    "a large red circle at top left",
    "a small blue square at center",
    "a large green triangle at bottom right and a small yellow cross at top left",
    "a small purple circle at top right",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompts", nargs="*", help="captions (default: four shape captions)")
    parser.add_argument("--model", default="shapes-t2i")
    parser.add_argument("--method", default="mc-sjd")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="sampling or decoding parameter, e.g. --set window=32 --set cfg_scale=3",
    )
    parser.add_argument("--out", default="outputs/generate", help="folder for the PNGs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def main(args: argparse.Namespace) -> int:
    model = load_model(args.model, device=args.device)
    prompts = args.prompts or DEFAULT_PROMPTS
    params = dict(parse_value(p) for p in args.set)
    results = generate(model, prompts, args.method, seed=args.seed, batch_size=args.batch_size, **params)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'id':>4} {'NFE':>5} {'steps x':>8} {'acc len':>8} {'accept %':>9}  prompt -> file")
    for r in results:
        path = out / f"{r.sample_id}.png"
        r.image.save(path)
        s = r.stats
        print(
            f"{r.sample_id:>4} {s.nfe:>5} {s.step_compression:>8.2f} {s.accept_len_mean:>8.2f} "
            f"{100 * s.acceptance_rate:>8.1f}%  {r.prompt!r} -> {path}"
        )
    total_nfe = sum(r.stats.nfe for r in results)
    print(
        f"{args.method} on {model.name}: {len(results)} images, step compression "
        f"{sum(r.stats.tokens for r in results) / total_nfe:.2f}x over AR ({total_nfe} forwards)"
    )
    return 0
