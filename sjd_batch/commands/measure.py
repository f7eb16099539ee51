"""Measurement for `bench` and `autotune`: method specs, rounds of interleaved runs, forward timing, memory,
and ratios with 95% intervals.

Protocol (docs/design.md, section 8): the prompts are cut into rounds; in each round every (method, schedule)
decodes the same prompts with the same seeds, one after the other, so drift on a shared machine hits
all of them alike. A ratio against `ar` is taken per round and summarised by its mean and a 95%
Student-t interval over the rounds. Clocks are read with the device synchronised.

Throughput: the project's one images/s (`sjd_batch/throughput.py`, README "Figures"): images made,
pixels included, over the wall-clock seconds from prompts in to images out.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from sjd_batch import throughput
from sjd_batch.api import GenerationResult, generate, split_params
from sjd_batch.decoding import EngineStats, SampleStats
from sjd_batch.decoding.jacobi import synced_clock
from sjd_batch.timing import ForwardTimer

HF_GENERATE = "hf-generate"
# two-sided 95% Student-t quantiles by degrees of freedom (1..30); 1.96 beyond
_T95 = [12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12,
        2.11, 2.10, 2.09, 2.09, 2.08, 2.07, 2.07, 2.06, 2.06, 2.06, 2.05, 2.05, 2.05, 2.04]


@dataclass
class MethodSpec:
    """A method name plus overrides, parsed from `name[:key=value...]` (e.g. `sjd-vp:vp_lambda=1.0`)."""

    label: str
    method: str
    params: dict[str, Any]


def parse_methods(text: str, common: dict[str, Any]) -> list[MethodSpec]:
    specs = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, *pairs = item.split(":")
        params = {} if name in ("ar", HF_GENERATE) else dict(common)  # baselines sample as `ar` does
        params.update(parse_value(p) for p in pairs)
        specs.append(MethodSpec(label=item, method=name, params=params))
    if not specs or specs[0].method != "ar":
        specs.insert(0, MethodSpec(label="ar", method="ar", params={}))  # every ratio is against AR
    return specs


def parse_value(pair: str) -> tuple[str, Any]:
    if "=" not in pair:
        raise SystemExit(f"bad parameter {pair!r}: expected key=value")
    key, raw = pair.split("=", 1)
    for cast in (int, float):
        try:
            return key, cast(raw)
        except ValueError:
            pass
    return key, {"true": True, "false": False}.get(raw.lower(), raw)


def ratio_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of per-round ratios (the interval is the mean alone for 1 round)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    df = len(values) - 1
    half = (_T95[df - 1] if df <= len(_T95) else 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


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


@dataclass
class Run:
    """One (method, schedule) decoding one round's prompts."""

    wall_s: float  # prompts in, images out (pixels included)
    pixel_s: float  # of which pixel decoding
    forward_s: float  # of which inside model.forward (prefills included)
    forwards: int
    decode_forwards: int  # forwards after the prefills ...
    decode_tokens: int  # ... and the tokens per row they fed, summed (window and tree nodes)
    results: list[GenerationResult]
    engine: EngineStats
    peak_mb: float

    @property
    def images_per_s(self) -> float:
        return throughput.images_per_s(len(self.results), self.wall_s) or 0.0


@dataclass
class Runner:
    """Runs one spec on a list of prompts with everything timed."""

    model: Any
    seed: int
    batch_size: int
    schedule: str = "continuous"
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, spec: MethodSpec, prompts: list[str], ids: list[str], round_index: int = 0) -> Run:
        engine = EngineStats()
        with RssPeak(self.model.device) as mem, ForwardTimer(self.model) as fwd:
            t0 = synced_clock(self.model.device)
            if spec.method == HF_GENERATE:
                out = [r for i in range(0, len(prompts), self.batch_size)
                       for r in hf_generate_results(self.model, prompts[i : i + self.batch_size],
                                                    ids[i : i + self.batch_size],
                                                    self.seed + round_index * 1000 + i, spec.params)]
            else:
                out = generate(self.model, prompts, spec.method, seed=self.seed, batch_size=self.batch_size,
                               sample_ids=ids, schedule=self.schedule, engine_stats=engine,
                               **spec.params, **self.extra)
            wall = synced_clock(self.model.device) - t0
        pixels = sum(r.stats.pixel_s for r in out)
        return Run(wall, pixels, fwd.seconds, fwd.calls, fwd.decode_calls, fwd.decode_tokens, out, engine,
                   mem.peak_mb)


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
                            decode_s=decode_s, pixel_s=pixel_s / len(prompts), extra={"layout_ok": ok[i]})
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
