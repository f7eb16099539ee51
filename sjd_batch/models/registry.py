"""Registered models by name: `load_model("tiny-random")`. A registry dict of named factories
(like LlamaGen's `GPT_models`), never dispatch on substrings of a path."""

from __future__ import annotations

from typing import Callable

import torch

from sjd_batch.decoding.protocol import ImageTokenModel

Factory = Callable[[torch.device, torch.dtype], ImageTokenModel]


def _tiny_random(device: torch.device, dtype: torch.dtype) -> ImageTokenModel:
    from sjd_batch.models.tiny_random import build_tiny

    return build_tiny(device=device, dtype=dtype)


def _shapes_t2i(device: torch.device, dtype: torch.dtype) -> ImageTokenModel:
    from sjd_batch.models.shapes.model import load_shapes

    return load_shapes(device=device, dtype=dtype)


MODELS: dict[str, Factory] = {
    "tiny-random": _tiny_random,
    "shapes-t2i": _shapes_t2i,
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


def load_model(
    name: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> ImageTokenModel:
    """Load a registered model by name.

    Raises:
        ValueError: for an unknown name (the message lists the registered ones) or dtype.
    """
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {sorted(MODELS)}")
    return MODELS[name](torch.device(device), dtype)
