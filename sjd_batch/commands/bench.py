"""`sjd-batch bench`: decoding methods side by side, in one process, on the same prompts and seeds.

Timing protocol (algorithms.md §8): warm-up generations are excluded; methods are interleaved
batch by batch so drift on a shared machine hits all of them alike; the device is synchronised
before clocks are read (inside the engine); speed-ups are ratios measured in this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from sjd_batch.api import GenerationResult, generate
from sjd_batch.models.registry import load_model


@dataclass
class MethodSpec:
    """A method name plus overrides, parsed from `name[:key=value...]` (e.g. `sjd-vp:vp_lambda=1.0`)."""

    label: str
    method: str
    params: dict[str, Any]


@dataclass
class Tally:
    """Running sums for one (method, batch size)."""

    samples: int = 0
    tokens: int = 0
    nfe: int = 0
    accept_lens: list[int] = field(default_factory=list)
    latency_s: float = 0.0  # prefill + decode: prompt to token ids
    total_s: float = 0.0  # ... plus pixel decode
    tested: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    peak_rss_mb: float = 0.0

    def observe(self, results: list[GenerationResult]) -> None:
        stats = [r.stats for r in results]
        self.samples += len(stats)
        self.tokens += sum(s.tokens for s in stats)
        self.nfe += sum(s.nfe for s in stats)
        for s in stats:
            self.accept_lens += s.accept_lens
            self.tested = _add(self.tested, s.tested_by_offset)
            self.accepted = _add(self.accepted, s.accepted_by_offset)
        self.latency_s += stats[0].prefill_s + stats[0].decode_s  # one batch: shared clocks
        self.total_s += stats[0].prefill_s + stats[0].decode_s + stats[0].pixel_s


def _add(a: list[int], b: list[int]) -> list[int]:
    size = max(len(a), len(b))
    return [(a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(size)]


def parse_methods(text: str, common: dict[str, Any]) -> list[MethodSpec]:
    specs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, *pairs = item.split(":")
        params = {} if name == "ar" else dict(common)
        params.update(_parse_value(p) for p in pairs)
        specs.append(MethodSpec(label=item, method=name, params=params))
    if not specs or specs[0].method != "ar":
        specs.insert(0, MethodSpec(label="ar", method="ar", params={}))  # every ratio is against AR
    return specs


def _parse_value(pair: str) -> tuple[str, Any]:
    if "=" not in pair:
        raise SystemExit(f"bad parameter {pair!r}: expected key=value")
    key, raw = pair.split("=", 1)
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def bench_prompts(model: Any, count: int, seed: int) -> list[str]:
    """The model's own caption sampler when it has one, else simple synthetic captions."""
    sampler = getattr(model, "example_prompts", None)
    if callable(sampler):
        return list(sampler(count, seed))
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "cyan"]
    shapes = ["circle", "square", "triangle", "cross"]
    return [f"a {colours[i % 8]} {shapes[(i // 8) % 4]} at the center" for i in range(count)]


class RssPeak:
    """Peak resident memory of this process while the block runs (polls /proc; CUDA: allocator peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mb, self._stop = device, 0.0, threading.Event()

    def __enter__(self) -> RssPeak:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self.peak_mb = max(self.peak_mb, int(f.read().split()[1]) * page_mb)
            self._stop.wait(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()


def run_bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    common = dict(_parse_value(p) for p in args.set)
    specs = parse_methods(args.methods, common)
    prompts = bench_prompts(model, args.prompts, args.seed)
    rows = []
    for batch_size in [int(b) for b in str(args.batch_size).split(",")]:
        tallies = _measure(model, specs, prompts, batch_size, args)
        rows += _summarise(model, specs, tallies, batch_size)
    return rows


def _measure(
    model: Any, specs: list[MethodSpec], prompts: list[str], batch_size: int, args
) -> dict[str, Tally]:
    for spec in specs:  # warm-up, excluded from every figure
        for _ in range(args.warmup):
            generate(
                model,
                prompts[:batch_size],
                spec.method,
                seed=args.seed + 1,
                batch_size=batch_size,
                **spec.params,
            )
    tallies = {spec.label: Tally() for spec in specs}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids = [str(i) for i in range(start, start + len(chunk))]
        for spec in specs:  # interleaved: every method sees the same batch back to back
            with RssPeak(model.device) as mem:
                out = generate(
                    model,
                    chunk,
                    spec.method,
                    seed=args.seed,
                    batch_size=batch_size,
                    sample_ids=ids,
                    **spec.params,
                )
            tallies[spec.label].observe(out)
            tallies[spec.label].peak_rss_mb = max(tallies[spec.label].peak_rss_mb, mem.peak_mb)
    return tallies


def _summarise(model: Any, specs: list[MethodSpec], tallies: dict[str, Tally], batch_size: int) -> list[dict]:
    ar = tallies["ar"]
    rows = []
    for spec in specs:
        t = tallies[spec.label]
        rows.append(
            {
                "model": model.name,
                "method": spec.label,
                "params": spec.params,
                "batch_size": batch_size,
                "samples": t.samples,
                "tokens_per_image": model.layout.length,
                "nfe_mean": t.nfe / t.samples,
                "step_compression": ar.nfe / t.nfe,
                "accept_len_mean": sum(t.accept_lens) / len(t.accept_lens),
                "acceptance_by_offset": [
                    a / n if n else 0.0 for a, n in zip(t.accepted, t.tested, strict=True)
                ],
                "latency_s_per_batch": t.latency_s / max(1, -(-t.samples // batch_size)),
                "latency_speedup_vs_ar": ar.latency_s / t.latency_s,
                "images_per_s": t.samples / t.total_s,
                "peak_mem_mb": t.peak_rss_mb,
                "device": str(model.device),
            }
        )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'method':<28}{'batch':>6}{'NFE':>9}{'steps x':>9}{'acc len':>9}"
        f"{'latency x':>11}{'img/s':>9}{'MB':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['method']:<28}{r['batch_size']:>6}{r['nfe_mean']:>9.1f}{r['step_compression']:>9.2f}"
            f"{r['accept_len_mean']:>9.2f}{r['latency_speedup_vs_ar']:>11.2f}{r['images_per_s']:>9.2f}"
            f"{r['peak_mem_mb']:>8.0f}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i", help="registered model name")
    parser.add_argument(
        "--methods",
        default="ar,sjd,sjd-vp,mc-sjd",
        help="comma list; each `name[:key=value...]`, e.g. sjd-vp:vp_lambda=1.0 (ar is always added)",
    )
    parser.add_argument(
        "--prompts", type=int, default=16, help="number of prompts (same prompts and seeds per method)"
    )
    parser.add_argument("--batch-size", default="1", help="batch size, or a comma list for a sweep (1,4,16)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter for every non-AR method, e.g. --set window=32 (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=2, help="excluded warm-up generations per method")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", default=None, help="write the figures to this JSON file")


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    rows = run_bench(args)
    print_table(rows)
    if args.json:
        meta = {
            "command": "sjd-batch bench " + " ".join(sys.argv[2:]),
            "wall_s": time.time() - started,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0
