"""`load_model(name)`: any model source -> a loaded `ImageTokenModel` (see `sources` for the forms).

The family's loader is imported only here, when a model is loaded, so `import sjd_batch` and
`sjd-batch --help` import no model code.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import torch

from sjd_batch.decoding.protocol import ImageTokenModel
from sjd_batch.models.family import ModelSourceError
from sjd_batch.models.registry import DTYPES, MODELS
from sjd_batch.models.sources import resolve_source


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    options: dict[str, Any] | None = None,
) -> ImageTokenModel:
    """Load a model from any source form (see `sjd_batch.models.sources`).

    `options` are family loader options (a job's `model.options`); they override the folder's
    `sjd_batch.json`.

    Raises:
        ValueError (`ModelSourceError`): an unknown name, a folder or prefix without a usable family, a
            hub id that is neither cached nor downloadable, an unknown option or an unknown dtype.
    """
    dtype = resolve_dtype(dtype)
    device = torch.device(device)
    entry = MODELS.get(name)
    if entry is not None and entry.factory is not None:
        if options:
            raise ModelSourceError(f"model {name}: takes no options, got {sorted(options)}")
        return _import(entry.factory)(device=device, dtype=dtype)
    resolved = resolve_source(name, options, fetch=True)
    loader = _import(resolved.family.loader)
    try:
        return loader(resolved.location, device, dtype, **resolved.options)
    except OSError as e:
        if not resolved.hub:
            raise
        raise ModelSourceError(f"model {name}: could not be downloaded from the hub: {e}") from e


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _import(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
