"""`sjd-batch bench-forward`: the cost of one window forward against window length and batch size,
and the per-image latency bound it implies.

Speculative Jacobi decoding trades forwards for wider forwards: it wins only while a forward of W
tokens costs well under W/c single-token forwards, where c is the step compression at window W. On a
GPU a decode forward is memory-bound (the weights are read once whatever W is), so the W-token forward
costs about what a 1-token one does until compute catches up; on a CPU it is compute-bound from the
start. This command measures that curve on the real model (random weights are fine: timing does not
depend on their values) and turns it into the latency bound

    latency(W) ~= prefill + (T / c(W)) * forward(W)

with c(W) the step compression measured on the trained model we ship (`--compression`).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import torch

from sjd_batch.models.loading import load_model
from sjd_batch.timing import ForwardTiming, time_forward  # noqa: F401 (ForwardTiming: re-exported)

# Step compression of `sjd` on shapes-t2i by window, from a window sweep on an earlier state of its
# weights (window 16 measures 2.79 now: docs/bench/shapes-512-b16.json); a rough default for the bound,
# override it with --compression (`sjd-batch autotune` measures c(W) on the model at hand).
DEFAULT_COMPRESSION = "1=1.0,16=2.86,32=3.34,64=3.60"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i", help="registered name, family:source, folder or s3://")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the window forward")
    parser.add_argument("--windows", default="1,16,32,64")
    parser.add_argument("--batch-sizes", default="1,4,16")
    parser.add_argument("--context", type=int, default=0,
                        help="key slots before the window (default: 64 + half the image layout)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-cfg", action="store_true", help="time B rows even if the model uses CFG")
    parser.add_argument("--compression", default=DEFAULT_COMPRESSION,
                        help="window=step-compression pairs for the latency bound")
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")


def parse_pairs(text: str) -> dict[int, float]:
    """'16=2.5,32=2.8' -> {16: 2.5, 32: 2.8}; a malformed pair raises a ValueError naming it."""
    pairs = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--compression: {item!r} is not window=compression (e.g. 16=2.5)")
        pairs[int(key)] = float(value)
    return pairs


def latency_bounds(timings: list[ForwardTiming], compression: dict[int, float], length: int) -> list[dict]:
    """Decode-time bound per (batch, window) that has a measured compression: T / c * forward."""
    out = []
    for t in timings:
        if t.window not in compression:
            continue
        forwards = length / compression[t.window]
        out.append({"batch": t.batch, "window": t.window, "compression": compression[t.window],
                    "forwards": round(forwards, 1), "decode_s": round(forwards * t.median_ms / 1e3, 4)})
    return out


def main(args: argparse.Namespace) -> int:
    windows = [int(w) for w in args.windows.split(",")]
    batches = [int(b) for b in args.batch_sizes.split(",")]
    compression = parse_pairs(args.compression)
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.compile:
        from sjd_batch.models.compiled import compile_forward

        model = compile_forward(model)
    cfg = model.default_sampling.uses_cfg and model.has_uncond and not args.no_cfg
    context = args.context or 64 + model.layout.length // 2
    timings = []
    with torch.inference_mode():
        for batch in batches:
            for window in windows:
                t = time_forward(model, batch, window, context, cfg, args.repeats, args.warmup)
                timings.append(t)
                print(f"batch {t.batch:3d} (rows {t.rows:3d})  window {t.window:3d}  "
                      f"{t.median_ms:9.3f} ms  {t.tokens_per_s:12.1f} tok/s", flush=True)
    bounds = latency_bounds(timings, compression, model.layout.length)
    for b in bounds:
        print(f"bound: batch {b['batch']:3d} window {b['window']:3d}  c={b['compression']:.2f}  "
              f"{b['forwards']:7.1f} forwards  decode {b['decode_s']:.3f} s/batch")
    if args.json:
        payload = {"model": args.model, "device": str(model.device), "dtype": str(model.dtype),
                   "cfg_rows": cfg, "tokens_per_image": model.layout.length,
                   "timings": [asdict(t) for t in timings], "bounds": bounds}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    return 0
