"""`sjd-batch bench`: decoding methods side by side, in one process, on the same prompts and seeds.

Timing protocol (docs/design.md, section 8): warm-up generations are excluded; methods are interleaved
batch by batch so drift on a shared machine hits all of them alike; the device is synchronised
before clocks are read (inside the engine); speed-ups are ratios measured in this same run.

`hf-generate` is a baseline beside our methods: transformers' own `generate()` on the same model, device,
prompts and sampling as `ar`, through the model's `hf_generate(prompts, seed, sampling)` (Emu3, Janus).
It counts one forward per token, and its tokens are checked against the layout (`layout_violations`).
Models without `hf_generate` report it as unsupported and the other methods still run.
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

from sjd_batch.api import GenerationResult, generate, split_params
from sjd_batch.decoding import SampleStats
from sjd_batch.decoding.jacobi import synced_clock
from sjd_batch.models.loading import load_model

HF_GENERATE = "hf-generate"


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
    layout_violations: int = 0  # samples whose tokens break the layout (checked for hf-generate)

    def observe(self, results: list[GenerationResult]) -> None:
        stats = [r.stats for r in results]
        self.layout_violations += sum(not s.extra.get("layout_ok", True) for s in stats)
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
        params = {} if name in ("ar", HF_GENERATE) else dict(common)  # baselines sample as `ar` does
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
    """One row per (method, batch size); an unsupported baseline gets a row with only `unsupported`."""
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.compile:
        from sjd_batch.models.compiled import compile_forward

        model = compile_forward(model)
    common = dict(_parse_value(p) for p in args.set)
    specs, rows = supported(model, parse_methods(args.methods, common))
    prompts = bench_prompts(model, args.prompts, args.seed)
    for batch_size in [int(b) for b in str(args.batch_size).split(",")]:
        tallies = _measure(model, specs, prompts, batch_size, args)
        rows += _summarise(model, specs, tallies, batch_size)
    return rows


def supported(model: Any, specs: list[MethodSpec]) -> tuple[list[MethodSpec], list[dict[str, Any]]]:
    """Drop `hf-generate` when the model has no `hf_generate`; say so in a row of its own."""
    if callable(getattr(model, "hf_generate", None)):
        return specs, []
    notes = [
        {"model": model.name, "method": spec.label,
         "unsupported": f"model {model.name} has no hf_generate(): the transformers generate() baseline "
                        "exists for the Emu3 and Janus families only"}
        for spec in specs if spec.method == HF_GENERATE
    ]
    for note in notes:
        print(f"{note['method']}: skipped: {note['unsupported']}", file=sys.stderr)
    return [spec for spec in specs if spec.method != HF_GENERATE], notes


def hf_generate_results(
    model: Any, prompts: list[str], ids: list[str], seed: int, params: dict[str, Any]
) -> list[GenerationResult]:
    """transformers' generate() through `model.hf_generate`, shaped like `generate()`'s results: one forward
    per token, wall time with the device synchronised, pixels decoded, layout checked per sample."""
    sampling, _ = split_params(model, "ar", params)
    t0 = synced_clock(model.device)
    tokens = model.hf_generate(prompts, seed, sampling)
    decode_s = synced_clock(model.device) - t0
    forced = torch.tensor(model.layout.forced)
    ok = [follows_layout(model.layout, row, forced) for row in tokens.cpu()]
    pixels: list[torch.Tensor | None] = [None] * len(prompts)
    if all(ok):  # a broken layout cannot be decoded; it is counted in `layout_violations` instead
        with torch.inference_mode():
            pixels = list(model.decode_pixels(tokens).cpu())
    pixel_s = synced_clock(model.device) - t0 - decode_s
    results = []
    for i, row in enumerate(tokens.cpu()):
        length = int(row.shape[0])
        stats = SampleStats(tokens=length, nfe=length, ar_steps=length, accept_lens=[1] * length,
                            drafts_tested=0, drafts_accepted=0, accepted_by_offset=[], tested_by_offset=[],
                            method=HF_GENERATE, params=vars(sampling), batch_size=len(prompts),
                            decode_s=decode_s, pixel_s=pixel_s, extra={"layout_ok": ok[i]})
        results.append(GenerationResult(ids[i], prompts[i], seed, row, pixels[i], stats))
    return results


def follows_layout(layout: Any, tokens: torch.Tensor, forced: torch.Tensor) -> bool:
    """Whether one sample's tokens [T] are the layout's length, with every forced id in place and image ids
    in the free slots."""
    if tokens.shape[0] != layout.length:
        return False
    free = forced < 0
    image = (tokens >= layout.image_start) & (tokens < layout.image_end)
    return bool(torch.equal(tokens[~free], forced[~free]) and image[free].all())


def _run(model: Any, spec: MethodSpec, prompts: list[str], ids: list[str] | None, seed: int,
         batch_size: int, start: int = 0) -> list[GenerationResult]:
    if spec.method == HF_GENERATE:  # generate() takes one torch seed per call: vary it per batch
        ids = ids or [str(i) for i in range(len(prompts))]
        return hf_generate_results(model, prompts, ids, seed + start, spec.params)
    return generate(model, prompts, spec.method, seed=seed, batch_size=batch_size, sample_ids=ids,
                    **spec.params)


def _measure(
    model: Any, specs: list[MethodSpec], prompts: list[str], batch_size: int, args
) -> dict[str, Tally]:
    for spec in specs:  # warm-up, excluded from every figure
        for _ in range(args.warmup):
            _run(model, spec, prompts[:batch_size], None, args.seed + 1, batch_size)
    tallies = {spec.label: Tally() for spec in specs}
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids = [str(i) for i in range(start, start + len(chunk))]
        for spec in specs:  # interleaved: every method sees the same batch back to back
            with RssPeak(model.device) as mem:
                out = _run(model, spec, chunk, ids, args.seed, batch_size, start)
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
                **({"layout_violations": t.layout_violations} if spec.method == HF_GENERATE else {}),
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
        if "unsupported" in r:
            print(f"{r['method']:<28}unsupported: {r['unsupported']}")
            continue
        print(
            f"{r['method']:<28}{r['batch_size']:>6}{r['nfe_mean']:>9.1f}{r['step_compression']:>9.2f}"
            f"{r['accept_len_mean']:>9.2f}{r['latency_speedup_vs_ar']:>11.2f}{r['images_per_s']:>9.2f}"
            f"{r['peak_mem_mb']:>8.0f}"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="shapes-t2i",
                        help="a registered name, family:source, a model folder, an s3:// prefix or a hub id")
    parser.add_argument(
        "--methods",
        default="ar,sjd,sjd-vp,mc-sjd",
        help="comma list; each `name[:key=value...]`, e.g. sjd-vp:vp_lambda=1.0 (ar is always added); "
        "hf-generate times transformers' own generate() (Emu3, Janus)",
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
    parser.add_argument("--compile", action="store_true", help="torch.compile the window forward")
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
