"""`generate()`: prompts in, images and per-sample statistics out.

This is the public face of the decoding core: it validates arguments, derives one seed per sample
from (job seed, sample id), batches, times the stages and turns tokens into PIL images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import torch

from sjd_batch.decoding import (
    DecodeConfig,
    ImageTokenModel,
    SampleStats,
    SamplingConfig,
    decode,
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
    tokens: torch.Tensor  # [T] long: the generated layout, forced tokens included
    pixels: torch.Tensor | None  # [H, W, 3] uint8, or None when images were not decoded
    stats: SampleStats

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
    base = vars(model.default_sampling).copy()
    base.update({k: v for k, v in params.items() if k in SAMPLING_KEYS})
    sampling = SamplingConfig(**base)
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
    method: str = "sjd-vp",
    seed: int = 0,
    batch_size: int = 8,
    *,
    negative_prompts: Sequence[str | None] | None = None,
    sample_ids: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    decode_images: bool = True,
    **params: Any,
) -> list[GenerationResult]:
    """Generate one image per prompt.

    Args:
        model: from `sjd_batch.load_model`.
        prompts: the captions.
        method: "ar", "jacobi", "sjd", "sjd-vp", "mc-sjd" or "mc-sjd-vp".
        seed: the job seed; sample i gets the seed blake2b(seed, sample_ids[i]).
        batch_size: samples decoded together; each advances at its own pace.
        negative_prompts: per-sample unconditional texts for CFG (default: the model's empty caption).
        sample_ids: stable ids (default "0", "1", ...); a sample's output depends only on its id,
            the job seed and the settings, never on its batch-mates.
        seeds: explicit per-sample seeds, overriding the derived ones.
        decode_images: also decode pixels (off for token-only benchmarks).
        **params: sampling (temperature, top_k, top_p, cfg_scale, cfg_mode) and decoding (window,
            init, init_law, vp_lambda, vp_form, vp_clip, vp_lossy, coupling) overrides.

    Returns:
        One `GenerationResult` per prompt, in order, with `.tokens`, `.image` and `.stats`.
    """
    prompts = _check_prompts(prompts, batch_size)
    sampling, config = split_params(model, method, params)
    ids = [str(i) for i in range(len(prompts))] if sample_ids is None else [str(s) for s in sample_ids]
    all_seeds = list(seeds) if seeds is not None else [sample_seed(seed, i) for i in ids]
    _check_lengths(len(prompts), ids=ids, seeds=all_seeds, negative_prompts=negative_prompts)
    results: list[GenerationResult] = []
    for rows in _batches(len(prompts), batch_size):
        negatives = [negative_prompts[i] for i in rows] if negative_prompts is not None else None
        results += generate_batch(
            model,
            [prompts[i] for i in rows],
            negatives,
            [ids[i] for i in rows],
            [all_seeds[i] for i in rows],
            sampling,
            config,
            decode_images,
        )
    return results


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
    """Decode one batch with settings already resolved (what `generate` and the job worker call).

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


def _batches(count: int, size: int) -> Iterator[list[int]]:
    for start in range(0, count, size):
        yield list(range(start, min(start + size, count)))
