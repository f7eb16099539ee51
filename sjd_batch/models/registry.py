"""Model families and registered models: what `load_model(source)` can load, and how.

A *family* is one kind of model (an architecture, its tokenizer, layout and pixel decoder): `shapes`,
`emu3`, ... Each has a lazily imported loader, `load(source, device, dtype, **options)`, where `source` is
a local folder or a hub id. A *registered model* is a short name (`tiny-random`, `shapes-t2i`,
`emu3-gen`) for a factory or for a source of some family.

`load_model` and a job's `model.name` accept a registered name, `family:source`, a local folder, an
`s3://` prefix or a hub id; `sjd_batch.models.sources` resolves them (folder manifests, the HF cache,
offline handling).

Loaders are "module:function" strings, so `import sjd_batch` and `sjd-batch --help` import no model
code. A registry dict of named entries (like LlamaGen's `GPT_models`), never dispatch on substrings.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from sjd_batch.decoding.protocol import ImageTokenModel
from sjd_batch.decoding.sampling import SamplingConfig

MANIFEST = "sjd_batch.json"  # in a model folder: {"family": "<a key of FAMILIES>", **loader options}
ASSETS_SHAPES = Path(__file__).resolve().parents[1] / "assets" / "shapes-t2i"

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float64": torch.float64,
}


class ModelSourceError(ValueError):
    """A model source that cannot be resolved or loaded; the message names it and what was expected."""


@dataclass(frozen=True)
class Defaults:
    """A family's published defaults (docs/model-families.md). Sampling fields become `SamplingConfig`;
    a job's
    `sampling:` section overrides them.

    Attributes:
        tokens_per_image: generated tokens at the default resolution, as a formula, e.g. "90·91 + 3 = 8193".
        resolution: default image size in pixels, e.g. "720x720".
        window: the SJD window the family's authors ran (documentation: the engine's own default, 16,
            applies unless a job sets `method.window`).
    """

    tokens_per_image: str
    resolution: str
    window: int = 16
    top_k: int = 0
    top_p: float = 1.0
    cfg_scale: float = 1.0
    cfg_mode: str = "raw"
    temperature: float = 1.0

    def sampling(self) -> SamplingConfig:
        """The family's default sampling, for an adapter's `default_sampling`."""
        return SamplingConfig(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            cfg_scale=self.cfg_scale,
            cfg_mode=self.cfg_mode,
        )


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: the key in `FAMILIES`, and the `family` of a folder's `sjd_batch.json`.
        loader: "module:function" of `load(source, device, dtype, **options) -> ImageTokenModel`, where
            `source` is a local folder or a hub id.
        summary: one line for `sjd-batch models`.
        loads_from: what the loader reads, in words.
        defaults: sampling and layout defaults from the family's authors.
        hf_model_types: `config.json` `model_type` values that mean this family (a folder without
            `sjd_batch.json`).
        options: keyword options the loader accepts (from `sjd_batch.json` and a job's `model.options`).
    """

    name: str
    loader: str
    summary: str
    loads_from: str
    defaults: Defaults
    hf_model_types: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegisteredModel:
    """A short name for a model: either a `factory` ("module:function" taking `device=`, `dtype=`) or a
    `source` that `load_model` resolves like any other (e.g. "emu3:BAAI/Emu3-Gen-hf")."""

    name: str
    family: str
    summary: str
    defaults: Defaults | None = None  # None: the family's
    factory: str | None = None
    source: str | None = None


FAMILIES: dict[str, Family] = {
    "shapes": Family(
        name="shapes",
        loader="sjd_batch.models.registry:load_shapes_folder",
        summary="sjd-batch's own text-to-image Llama with k-means patch codes (shapes-t2i)",
        loads_from="local folder: config.json + model.safetensors + codebook + vocabulary.json",
        defaults=Defaults(tokens_per_image="16·17 + 1 = 273", resolution="64x64", top_p=0.8, cfg_scale=1.0),
    ),
    "emu3": Family(
        name="emu3",
        loader="sjd_batch.models.emu3:load",
        summary="BAAI Emu3-Gen: 8B Llama-style LM over a MoVQ codebook, EOL per row, log-softmax CFG",
        loads_from="transformers Emu3ForConditionalGeneration + Emu3Processor: hub id or local folder",
        defaults=Defaults(tokens_per_image="90·91 + 3 = 8193", resolution="720x720", top_k=2048,
                          cfg_scale=3.0, cfg_mode="log-softmax"),
        hf_model_types=("emu3",),
        options=("image_area", "negative_prompt", "positive_suffix"),
    ),
    "janus": Family(
        name="janus",
        loader="sjd_batch.models.janus:load",
        summary="DeepSeek Janus / Janus-Pro: Llama LM, separate generation head over 16,384 VQ codes, CFG 5",
        loads_from="transformers JanusForConditionalGeneration + JanusProcessor: hub id or local folder",
        defaults=Defaults(tokens_per_image="24·24 = 576", resolution="384x384", top_k=0, cfg_scale=5.0),
        hf_model_types=("janus",),
        options=("attn_implementation",),
    ),
    "llamagen": Family(
        name="llamagen",
        loader="sjd_batch.models.llamagen:load",
        summary="FoundationVision LlamaGen: GPT over VQ-16 codes (16,384); t2i reads flan-t5-xl states, "
        "c2i a class id; CFG with a learned null embedding (c2i: cfg 4.0, top-k 2000)",
        loads_from="local folder: official GPT + VQ .pt checkpoints (+ a T5 folder for t2i), sjd_batch.json",
        defaults=Defaults(tokens_per_image="32·32 = 1024", resolution="512x512",
                          top_k=1000, top_p=1.0, cfg_scale=7.5),
        options=("kind", "gpt", "vq", "image_size", "gpt_model", "vq_model", "t5", "cls_token_num",
                 "num_classes", "codebook_size", "codebook_embed_dim", "t5_max_length", "t5_dtype", "name",
                 "sampling", "trust_checkpoint"),
    ),
    "lumina-mgpt": Family(
        name="lumina-mgpt",
        loader="sjd_batch.models.lumina:load",
        summary="Alpha-VLLM Lumina-mGPT: 7B Chameleon LM over Meta's VQGAN codes (8192), size header, EOL "
        "per row, raw CFG on the image-only context, image top-k 2000",
        loads_from="local folder: HF Chameleon checkpoint (config.json with vocabulary_map, tokenizer) + "
        "Meta's vqgan.ckpt and vqgan.yaml, sjd_batch.json with the resolution",
        defaults=Defaults(tokens_per_image="3 + 48·49 + 2 = 2357", resolution="768x768", top_k=2000,
                          cfg_scale=3.0),
        hf_model_types=("chameleon",),
        options=("resolution", "vqgan"),
    ),
    # Other helpers each add ONE entry here: "janus" (loader "sjd_batch.models.janus:load"),
    # "lumina-mgpt" ("sjd_batch.models.lumina:load") and "llamagen" ("sjd_batch.models.llamagen:load").
}

MODELS: dict[str, RegisteredModel] = {
    "tiny-random": RegisteredModel(
        name="tiny-random",
        family="shapes",
        summary="random-weight Llama with the shapes layout, for plumbing tests (acceptance meaningless)",
        defaults=Defaults(tokens_per_image="8·9 + 1 = 73", resolution="32x32", top_k=0, cfg_scale=3.0),
        factory="sjd_batch.models.tiny_random:build_tiny",
    ),
    "shapes-t2i": RegisteredModel(
        name="shapes-t2i",
        family="shapes",
        summary="the trained model shipped in sjd_batch/assets/shapes-t2i (see its model card)",
        source=f"shapes:{ASSETS_SHAPES}",
    ),
    "emu3-gen": RegisteredModel(
        name="emu3-gen",
        family="emu3",
        summary="BAAI/Emu3-Gen-hf from the Hugging Face hub (or its local cache)",
        source="emu3:BAAI/Emu3-Gen-hf",
    ),
}


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
    from sjd_batch.models.sources import resolve_source  # sources reads this module's tables

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


def check_source(name: str, options: dict[str, Any] | None = None) -> None:
    """Validate a model source without loading weights or downloading a model (a job's fail-fast check).

    Raises:
        ValueError (`ModelSourceError`): as `load_model` would, naming what is wrong.
    """
    entry = MODELS.get(name)
    if entry is not None and entry.factory is not None:
        if options:
            raise ModelSourceError(f"model {name}: takes no options, got {sorted(options)}")
        return
    from sjd_batch.models.sources import resolve_source  # sources reads this module's tables

    resolve_source(name, options, fetch=False)


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_shapes_folder(source: str, device: torch.device, dtype: torch.dtype) -> ImageTokenModel:
    """The `shapes` family loader: a folder like sjd_batch/assets/shapes-t2i."""
    from sjd_batch.models.shapes.model import load_shapes

    return load_shapes(device=device, dtype=dtype, assets=Path(source))


def _import(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
