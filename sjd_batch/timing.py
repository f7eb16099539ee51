"""Timing primitives shared by `bench`, `bench-forward`, `autotune` and the worker's `auto` settings.

Clocks are read with the device synchronised (`synced_clock`), so a GPU's queued work is counted where
it is done, not where it was launched.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Callable

import torch

from sjd_batch.decoding.jacobi import synced_clock
from sjd_batch.decoding.protocol import decode_window


@dataclass(frozen=True)
class ForwardTiming:
    batch: int
    rows: int  # batch, doubled when CFG rows ride along
    window: int
    context: int  # key slots each query attends over
    median_ms: float
    tokens_per_s: float


def time_forward(model, batch: int, window: int, context: int, cfg: bool, repeats: int, warmup: int):
    """Median wall time of one `window`-token forward for `batch` samples over `context` key slots."""
    rows = batch * (2 if cfg else 1)
    slots = context + window
    cache = model.new_cache(rows, slots)
    lo, hi = model.layout.image_start, model.layout.image_end
    ids = torch.randint(lo, hi, (rows, window), device=model.device)
    first = torch.full((rows,), context, dtype=torch.long, device=model.device)
    start = torch.zeros(rows, dtype=torch.long, device=model.device)
    win = decode_window(first, start, window, slots)
    times = []
    for i in range(warmup + repeats):
        t0 = synced_clock(model.device)
        model.forward(cache, ids, win)
        elapsed = synced_clock(model.device) - t0
        if i >= warmup:
            times.append(elapsed)
    median = statistics.median(times)
    return ForwardTiming(batch, rows, window, context, median * 1e3, batch * window / median)


class ForwardTimer:
    """Times every `model.forward` call while the block runs (device synchronised before and after).

    It wraps the instance attribute, so the engine's calls, compiled or not, all pass through it. It also
    counts the tokens each row feeds the decode forwards (prefills left out): a draft tree makes a
    forward wider than a chain of the same window, and `tokens_per_forward` shows that cost.
    """

    def __init__(self, model: Any) -> None:
        self.model, self.seconds, self.calls = model, 0.0, 0
        self.decode_calls, self.decode_tokens = 0, 0

    @property
    def tokens_per_forward(self) -> float | None:
        """Mean tokens per row in a decode forward (the window, plus any draft-tree nodes)."""
        return self.decode_tokens / self.decode_calls if self.decode_calls else None

    def __enter__(self) -> ForwardTimer:
        inner, device = self.model.forward, self.model.device

        def timed(cache: Any, ids: Any, window: Any, *args: Any, **kwargs: Any) -> Any:
            # the protocol's forward(cache, ids, window): named here so the counts need no sniffing
            t0 = synced_clock(device)
            out = inner(cache, ids, window, *args, **kwargs)
            self.seconds += synced_clock(device) - t0
            self.calls += 1
            if getattr(window, "generated", False):
                self.decode_calls += 1
                self.decode_tokens += int(ids.shape[-1])
            return out

        self._restore = wrap_forward(self.model, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


def wrap_forward(model: Any, wrapper: Callable[..., Any]) -> Callable[[], None]:
    """Put `wrapper` in place of the instance's `forward`; returns what puts the old one back (the
    instance's own attribute if it had one, else the class method again)."""
    had_own, inner = "forward" in vars(model), model.forward
    model.forward = wrapper

    def restore() -> None:
        if had_own:
            model.forward = inner
        else:
            del model.forward

    return restore


class OpCounter:
    """Counts the top-level torch operators run while the block runs: inside `model.forward`, and
    around it (the engine's sampling, verification, drafting and bookkeeping).

    On a small model on a CPU every operator costs a few microseconds of dispatch whatever its size,
    so `around / inside` is close to what the engine adds to the forward: the floor that
    `engine_overhead` cannot go below without fewer operators. Counted with torch's profiler, on a run
    of its own (the profiler slows both sides).
    """

    _LABEL = "sjd_batch.model_forward"

    def __init__(self, model: Any) -> None:
        self.model, self.inside, self.around, self.forwards = model, 0, 0, 0

    def __enter__(self) -> OpCounter:
        from torch.profiler import ProfilerActivity, profile, record_function

        inner = self.model.forward

        def labelled(*args: Any, **kwargs: Any) -> Any:
            self.forwards += 1
            with record_function(self._LABEL):
                return inner(*args, **kwargs)

        self._restore = wrap_forward(self.model, labelled)
        self._profile = profile(activities=[ProfilerActivity.CPU])
        self._profile.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._profile.__exit__(*exc)
        self._restore()
        for event in self._profile.events():
            if event.cpu_parent is None:
                self._count(event)

    def _count(self, event: Any) -> None:
        if event.name == self._LABEL:
            self.inside += len(event.cpu_children)
        else:
            self.around += 1

    def per_forward(self) -> dict[str, float]:
        calls = max(1, self.forwards)
        return {"model": self.inside / calls, "around": self.around / calls}


def bench_prompts(model: Any, count: int, seed: int) -> list[str]:
    """The model's own caption sampler when it has one, else simple synthetic captions."""
    sampler = getattr(model, "example_prompts", None)
    if callable(sampler):
        return list(sampler(count, seed))
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "white", "cyan"]
    shapes = ["circle", "square", "triangle", "cross"]
    return [f"a {colours[i % 8]} {shapes[(i // 8) % 4]} at the center" for i in range(count)]
