"""`generate()`: prompts in, images and per-sample statistics out.

This is the public face of the decoding core: it validates arguments, derives one seed per sample
from (job seed, sample id), batches, times the stages and turns tokens into PIL images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Iterator, Sequence

import torch

from sjd_batch.decoding import (
    DecodeConfig,
    EngineStats,
    ImageTokenModel,
    Request,
    SampleStats,
    SamplingConfig,
    decode,
    decode_stream,
    resolve_method,
)
from sjd_batch.decoding.rng import sample_seed, seed_tensor

SAMPLING_KEYS = frozenset(f.name for f in fields(SamplingConfig))
DECODING_KEYS = frozenset(f.name for f in fields(DecodeConfig)) - {"method"}


@dataclass
class GenerationResult:
    """One generated sample."""

    sample_id: str
    prompt: str
    seed: int
    tokens: torch.Tensor | None  # [T] long: the generated layout, forced tokens included
    pixels: torch.Tensor | None  # [H, W, 3] uint8, or None when images were not decoded
    stats: SampleStats | None
    error: str | None = None  # why the engine refused the request (tokens and stats are then None)

    @property
    def image(self) -> Any:
        """The image as a PIL image (PIL is imported only here)."""
        from PIL import Image

        if self.pixels is None:
            raise ValueError(
                f"sample {self.sample_id}: generated with decode_images=False, so it has no image"
            )
        return Image.fromarray(self.pixels.numpy())


def split_params(
    model: ImageTokenModel, method: str, params: dict[str, Any]
) -> tuple[SamplingConfig, DecodeConfig]:
    """Split keyword arguments into sampling settings (over the model's defaults) and the method.

    Raises:
        TypeError: for a parameter that is neither.
        ValueError: for a bad value, naming the parameter and what is allowed.
    """
    unknown = sorted(set(params) - SAMPLING_KEYS - DECODING_KEYS)
    if unknown:
        raise TypeError(
            f"unknown parameter(s) {unknown}; sampling: {sorted(SAMPLING_KEYS)}, "
            f"decoding: {sorted(DECODING_KEYS)}"
        )
    sampling = replace(model.default_sampling, **{k: v for k, v in params.items() if k in SAMPLING_KEYS})
    config = resolve_method(method, **{k: v for k, v in params.items() if k in DECODING_KEYS})
    check_sampling(model, sampling)
    return sampling, config


def check_sampling(model: ImageTokenModel, sampling: SamplingConfig) -> None:
    """Raise a ValueError for sampling settings the model cannot honour (CFG without an uncond prompt)."""
    if sampling.uses_cfg and not model.has_uncond:
        raise ValueError(
            f"cfg_scale={sampling.cfg_scale} needs an unconditional prompt, and model {model.name} has none; "
            "set cfg_scale=1.0"
        )


def generate(
    model: ImageTokenModel,
    prompts: Sequence[str],
    method: str = "mc-sjd",
    seed: int = 0,
    batch_size: int = 8,
    *,
    negative_prompts: Sequence[str | None] | None = None,
    sample_ids: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    decode_images: bool = True,
    schedule: str = "continuous",
    engine_stats: EngineStats | None = None,
    **params: Any,
) -> list[GenerationResult]:
    """Generate one image per prompt.

    Args:
        model: from `sjd_batch.load_model`.
        prompts: the captions.
        method: "ar", "jacobi", "sjd", "sjd-vp", "mc-sjd", "mc-sjd-vp" or "sjd-pac".
        seed: the job seed; sample i gets the seed blake2b(seed, sample_ids[i]).
        batch_size: samples decoded together; each advances at its own pace, and a finished one's
            slot takes the next prompt at once (continuous batching).
        negative_prompts: per-sample unconditional texts for CFG (default: the model's empty caption).
        sample_ids: stable ids (default "0", "1", ...); a sample's output depends only on its id,
            the job seed and the settings, never on its batch-mates.
        seeds: explicit per-sample seeds, overriding the derived ones.
        decode_images: also decode pixels (off for token-only benchmarks).
        schedule: "continuous" (default) or "fixed" (the old way: the next batch_size prompts start
            only once every slot is done; for comparisons).
        engine_stats: an `EngineStats` to fill with the engine's counters (share of idle slots).
        **params: sampling (temperature, top_k, top_p, cfg_scale, cfg_mode) and decoding (window,
            init, init_law, vp_lambda, vp_form, vp_clip, vp_lossy, coupling, verifier, tree_width,
            tree_depth) overrides.

    Returns:
        One `GenerationResult` per prompt, in order, with `.tokens`, `.image` and `.stats`.
    """
    prompts = _check_prompts(prompts, batch_size)
    sampling, config = split_params(model, method, params)
    ids = [str(i) for i in range(len(prompts))] if sample_ids is None else [str(s) for s in sample_ids]
    all_seeds = list(seeds) if seeds is not None else [sample_seed(seed, i) for i in ids]
    _check_lengths(len(prompts), ids=ids, seeds=all_seeds, negative_prompts=negative_prompts)
    model.encode(prompts, negative_prompts, with_uncond=sampling.uses_cfg)  # bad prompts fail before any work
    negatives = negative_prompts or [None] * len(prompts)
    requests = [Request(prompts[i], all_seeds[i], negatives[i], tag=ids[i]) for i in range(len(prompts))]
    results = {}
    for _, r in generate_stream(model, requests, sampling, config, batch_size, decode_images, schedule,
                                engine_stats):
        if r.error is not None:
            raise ValueError(f"sample {r.sample_id}: {r.error}")
        results[r.sample_id] = r
    return [results[i] for i in ids]


def generate_stream(
    model: ImageTokenModel,
    requests: Iterable[Request],
    sampling: SamplingConfig,
    config: DecodeConfig,
    batch_size: int,
    decode_images: bool = True,
    schedule: str = "continuous",
    engine_stats: EngineStats | None = None,
) -> Iterator[tuple[Request, GenerationResult]]:
    """Decode a stream of requests with `batch_size` in flight; yield each (request, result) as it finishes.

    Settings are already resolved (`split_params`). A result's `sample_id` is `str(request.tag)`. A
    request the model refuses yields a result with `error` set (and no tokens); the stream goes on.
    """
    for f in decode_stream(model, requests, sampling, config, batch_size, schedule, engine_stats):
        req = f.request
        if f.error is not None:
            yield req, GenerationResult(str(req.tag), req.prompt, req.seed, None, None, None, f.error)
            continue
        pixels = None
        if decode_images:
            t0 = time.perf_counter()
            with torch.inference_mode():
                pixels = model.decode_pixels(f.tokens[None])[0].cpu()
            f.stats.observe_pixels(time.perf_counter() - t0)
        yield req, GenerationResult(str(req.tag), req.prompt, req.seed, f.tokens, pixels, f.stats)


def generate_batch(
    model: ImageTokenModel,
    prompts: list[str],
    negatives: list[str | None] | None,
    ids: list[str],
    seeds: list[int],
    sampling: SamplingConfig,
    config: DecodeConfig,
    decode_images: bool = True,
) -> list[GenerationResult]:
    """Decode one batch with settings already resolved, all rows together, through the one-shot
    `decode` (`generate` and the job worker stream through `generate_stream` instead).

    Args:
        prompts, negatives, ids, seeds: one entry per sample (`negatives` None: the model's empty caption).
        sampling: the final sampling settings (model defaults already applied, see `check_sampling`).
        config: the method.
    """
    prefix = model.encode(prompts, negatives, with_uncond=sampling.uses_cfg)
    out = decode(model, prefix, seed_tensor(seeds, model.device), sampling, config)
    pixels: list[torch.Tensor | None] = [None] * len(prompts)
    if decode_images:
        t0 = time.perf_counter()
        with torch.inference_mode():
            pixels = list(model.decode_pixels(out.tokens).cpu())
        for s in out.stats:
            s.observe_pixels(time.perf_counter() - t0)
    return [
        GenerationResult(ids[i], prompts[i], seeds[i], out.tokens[i], pixels[i], out.stats[i])
        for i in range(len(prompts))
    ]


def _check_prompts(prompts: Sequence[str], batch_size: int) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("prompts is empty: pass at least one prompt")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts[{i}] is {type(p).__name__}, expected str")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return prompts


def _check_lengths(count: int, **lists: Sequence[Any] | None) -> None:
    for name, values in lists.items():
        if values is not None and len(values) != count:
            raise ValueError(f"{name} has {len(values)} entries for {count} prompts")
