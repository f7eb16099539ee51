"""Auto-tuned window and batch size (`sjd-batch autotune`, `method.window: auto`, `run.batch_size: auto`).

Measure on the machine at hand, model, choose. The cost model, per image, with continuous batching
(no idle slots):

    seconds per image (W, B) = (T / c(W)) * forward(W, B) * k(W) / B  +  prefill + pixels

    T            generated tokens per image (the layout length)
    c(W)         step compression at window W, from a short calibration decode (c = 1 for AR)
    forward(W,B) median wall time of one forward over B samples' windows of W tokens, measured here
                 (`timing.time_forward`, CFG rows included)
    k(W)         engine overhead, wall / summed forward time, measured in the same calibration decode
    prefill, pixels  per image, from the calibration decode

images/s = 1 / seconds per image; the choice maximises it over the measured grid. Assumptions, said
out loud: k does not depend on B (measured at the calibration batch), and c does not depend on B
(true: a sample's tokens and forwards do not depend on its batch-mates). The same formula with a
forward time from a roofline instead of a measurement gives the GPU projection.

`auto` in a job (`method.window: auto`, `run.batch_size: auto`) runs a short version of the same tune
in each actor once its model is loaded (`auto_settings`) and logs what it chose and why.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from sjd_batch.api import generate_stream
from sjd_batch.decoding import DecodeConfig, Request, SamplingConfig, resolve_method
from sjd_batch.decoding.jacobi import synced_clock
from sjd_batch.decoding.rng import sample_seed
from sjd_batch.timing import ForwardTimer, time_forward

DEFAULT_WINDOWS = (4, 8, 12, 16, 24, 32, 48, 64)
DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32, 64)
AUTO_WINDOWS = (8, 16, 32)  # the worker's short tune for `window: auto` (AR, window 1, is added)
AUTO_BATCHES = (1, 4, 16, 32)


@dataclass(frozen=True)
class Calibration:
    """What a short decode at one window measured."""

    window: int
    compression: float  # T / mean NFE
    overhead: float  # k: (wall - pixels) / forward time
    prefill_s: float  # per image
    pixel_s: float  # per image


@dataclass(frozen=True)
class Candidate:
    method: str
    window: int  # 1 for AR
    batch: int
    seconds_per_image: float

    @property
    def images_per_s(self) -> float:
        return 1.0 / self.seconds_per_image


@dataclass
class TuneResult:
    """Everything `autotune` measured and chose (its JSON)."""

    model: str
    device: str
    method: str
    tokens: int
    forward_ms: dict[str, float] = field(default_factory=dict)  # "W,B" -> median ms
    calibration: list[Calibration] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)

    def best(self, method: str | None = None) -> Candidate:
        pool = [c for c in self.candidates if method is None or c.method == method]
        return min(pool, key=lambda c: c.seconds_per_image)

    def best_speculative(self) -> Candidate:
        return min((c for c in self.candidates if c.method != "ar"), key=lambda c: c.seconds_per_image)

    def why(self) -> str:
        """One paragraph: what was chosen and why, in the cost model's terms."""
        spec, ar = self.best_speculative(), self.best("ar")
        winner = spec if spec.seconds_per_image <= ar.seconds_per_image else ar
        return f"{self.explain()} Choice: {winner.method} (window {winner.window}, batch {winner.batch})."

    def explain(self) -> str:
        """The best setting of the speculative method and of AR, with the measurements behind each."""
        spec, ar = self.best_speculative(), self.best("ar")
        cal = next(c for c in self.calibration if c.window == spec.window)
        fwd = self.forward_ms[f"{spec.window},{spec.batch}"]
        ar_fwd = self.forward_ms[f"1,{ar.batch}"]
        return (
            f"best {self.method}: window {spec.window}, batch {spec.batch}: step compression "
            f"{cal.compression:.2f} x, forward {fwd:.2f} ms for {spec.batch} x {spec.window} tokens, "
            f"engine overhead {cal.overhead:.2f} -> {spec.images_per_s:.2f} images/s predicted. "
            f"Best ar: batch {ar.batch}, forward {ar_fwd:.2f} ms -> {ar.images_per_s:.2f} images/s."
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = asdict(self.best_speculative())
        out["best_ar"] = asdict(self.best("ar"))
        out["why"] = self.why()
        return out


def forward_grid(model: Any, sampling: SamplingConfig, windows: list[int], batches: list[int],
                 repeats: int = 5, warmup: int = 2, deadline: float | None = None) -> dict[str, float]:
    """Median forward ms per "W,B" (context: the middle of a decode); a cell that runs out of memory
    is left out, and so are the larger batches at that window. Past `deadline` (`time.monotonic()`)
    the cells left are skipped."""
    cfg = sampling.uses_cfg
    context = 64 + model.layout.length // 2
    grid: dict[str, float] = {}
    with torch.inference_mode():
        for window in windows:
            for batch in batches:
                if deadline is not None and time.monotonic() > deadline:
                    return grid
                try:
                    t = time_forward(model, batch, window, context, cfg, repeats, warmup)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    break
                grid[f"{window},{batch}"] = t.median_ms
    return grid


def calibrate(model: Any, sampling: SamplingConfig, method: DecodeConfig, windows: list[int],
              prompts: list[str], batch: int, seed: int = 0) -> list[Calibration]:
    """Step compression and engine overhead per window, from a short decode of `prompts` (AR: window 1)."""
    out = []
    for window in windows:
        config = resolve_method("ar") if window == 1 else replace(method, window=window)
        out.append(_calibration_decode(model, sampling, config, prompts, batch, seed))
    return out


def _calibration_decode(model: Any, sampling: SamplingConfig, config: DecodeConfig, prompts: list[str],
                        batch: int, seed: int) -> Calibration:
    requests = [Request(p, sample_seed(seed, f"tune-{i}"), tag=i) for i, p in enumerate(prompts)]
    with ForwardTimer(model) as fwd:
        t0 = synced_clock(model.device)
        results = [r for _, r in generate_stream(model, requests, sampling, config, batch)]
        wall = synced_clock(model.device) - t0
    stats = [r.stats for r in results if r.stats is not None]
    if not stats:
        raise ValueError(f"tuning: the model refused every calibration prompt ({results[0].error})")
    pixel_s = sum(s.pixel_s for s in stats)
    return Calibration(
        window=config.window if config.method != "ar" else 1,
        compression=model.layout.length / statistics.fmean(s.nfe for s in stats),
        overhead=(wall - pixel_s) / fwd.seconds,
        prefill_s=statistics.fmean(s.prefill_s for s in stats),
        pixel_s=pixel_s / len(stats),
    )


def predict(cal: Calibration, forward_ms: float, batch: int, tokens: int) -> float:
    """Seconds per image under the cost model (module docstring)."""
    return tokens / cal.compression * forward_ms / 1e3 * cal.overhead / batch + cal.prefill_s + cal.pixel_s


def candidates(result: TuneResult) -> list[Candidate]:
    """Every measured (window, batch) priced by the cost model."""
    out = []
    for cal in result.calibration:
        method = "ar" if cal.window == 1 else result.method
        for key, ms in result.forward_ms.items():
            window, batch = (int(v) for v in key.split(","))
            if window == cal.window:
                out.append(Candidate(method, window, batch, predict(cal, ms, batch, result.tokens)))
    return out


def tune(model: Any, sampling: SamplingConfig, method: DecodeConfig, prompts: list[str], windows: list[int],
         batches: list[int], calibration_batch: int = 8, repeats: int = 5, label: str = "") -> TuneResult:
    """Measure the forward grid and the calibration, then price every cell (AR, window 1, always in)."""
    length = model.layout.length
    windows = sorted({1, *[w for w in windows if 2 <= w <= length]}) if method.method != "ar" else [1]
    result = TuneResult(model.name, str(model.device), label or method.method, length)
    result.forward_ms = forward_grid(model, sampling, windows, batches, repeats)
    batch = min(calibration_batch, len(prompts))
    result.calibration = calibrate(model, sampling, method, windows, prompts, batch)
    result.candidates = candidates(result)
    return result


@dataclass(frozen=True)
class AutoChoice:
    """What `window: auto` / `batch_size: auto` settled on, and why (one sentence for the log)."""

    method: DecodeConfig
    batch: int
    why: str


def auto_settings(model: Any, sampling: SamplingConfig, method: DecodeConfig, window_auto: bool,
                  batch: int | None, prompts: list[str]) -> AutoChoice:
    """A short tune on this machine for the settings left to `auto` (a small grid, one calibration
    batch): the method's window (kept when not `auto`) and batch size (`batch` None: `auto`) with the
    most predicted images/s. The method itself is the job's; the AR figure is only reported."""
    windows = list(AUTO_WINDOWS) if window_auto else [method.window]
    batches = list(AUTO_BATCHES) if batch is None else [batch]
    result = tune(model, sampling, method, prompts, windows, batches, calibration_batch=4, repeats=3)
    if method.method == "ar":
        best = result.best("ar")
        why = f"ar: batch {best.batch}, {best.images_per_s:.2f} images/s predicted"
        return AutoChoice(method, best.batch, why)
    best, ar = result.best_speculative(), result.best("ar")
    note = (f" The job's method stays {method.method}; plain ar would be faster on this hardware."
            if ar.seconds_per_image < best.seconds_per_image else "")
    return AutoChoice(replace(method, window=best.window), best.batch, result.explain() + note)
