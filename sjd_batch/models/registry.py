"""Registered models by name: `load_model("tiny-random")`. A registry dict of named factories
(like LlamaGen's `GPT_models`), never dispatch on substrings of a path."""

from __future__ import annotations

import json
from pathlib import Path
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


ASSETS_SHAPES = Path(__file__).resolve().parents[1] / "assets" / "shapes-t2i"
MANIFEST = "sjd_batch.json"  # in a model folder: {"family": "<a key of FAMILIES>"}


def _shapes_folder(path: Path, device: torch.device, dtype: torch.dtype) -> ImageTokenModel:
    from sjd_batch.models.shapes.model import load_shapes

    return load_shapes(device=device, dtype=dtype, assets=path)


# Families that load from a folder (a local path, or an s3:// prefix fetched to the node's cache).
FAMILIES: dict[str, Callable[[Path, torch.device, torch.dtype], ImageTokenModel]] = {
    "shapes": _shapes_folder,
}


def load_model(
    name: str, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32"
) -> ImageTokenModel:
    """Load a model: a registered name, a local model folder, or an `s3://` model prefix.

    A model folder names its family in `sjd_batch.json`; an `s3://` prefix is downloaded once per
    node into `$SJD_BATCH_CACHE` (default `~/.cache/sjd-batch`), under a lock, so actors sharing a
    node share one copy. Nothing is fetched from a model hub.

    Raises:
        ValueError: for an unknown name, a folder without a usable manifest, or an unknown dtype.
    """
    dtype = resolve_dtype(dtype)
    if name in MODELS:
        return MODELS[name](torch.device(device), dtype)
    folder = _model_folder(name)
    family = read_family(folder)
    return FAMILIES[family](folder, torch.device(device), dtype)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def _model_folder(name: str) -> Path:
    if name.startswith("s3://"):
        from sjd_batch.io.model_cache import fetch_model

        return fetch_model(name)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    raise ValueError(
        f"unknown model {name!r}: not one of the registered models {sorted(MODELS)}, "
        "not a local model folder and not an s3:// prefix"
    )


def check_source(name: str) -> None:
    """Validate a model name or location without loading any weights (a job's fail-fast check).

    Raises:
        ValueError: as `load_model` would, naming what is wrong.
    """
    if name in MODELS:
        return
    if name.startswith("s3://"):
        from sjd_batch.io.storage import Storage

        if not Storage.from_uri(name).exists(MANIFEST):
            raise ValueError(f"model {name}: no {MANIFEST} under this prefix; expected a model folder")
        return
    read_family(_model_folder(name))


def read_family(folder: Path) -> str:
    """The family named by a model folder's manifest; a ValueError says what is missing."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        raise ValueError(
            f"model folder {folder} has no {MANIFEST}; it must name the family, e.g. "
            f'{{"family": "shapes"}} (families: {sorted(FAMILIES)})'
        )
    family = json.loads(manifest.read_text()).get("family")
    if family not in FAMILIES:
        raise ValueError(f"{manifest}: unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return family
