"""Model families and registered models: what `load_model(source)` can load, and how.

A *family* is one kind of model (an architecture, its tokenizer, layout and pixel decoder): `shapes`,
`emu3`, ... Each has a lazily imported loader, `load(source, device, dtype, **options)`, where `source` is
a local folder or a hub id. A *registered model* is a short name (`tiny-random`, `shapes-t2i`,
`emu3-gen`) for a factory or for a source of some family.

`load_model` and a job's `model.name` accept:
- a registered name (`MODELS`);
- `family:source`, e.g. `emu3:BAAI/Emu3-Gen-hf` or `emu3:/models/emu3`, which names the family;
- a local folder: the family comes from its `sjd_batch.json` (`{"family": "emu3", ...}`; the other keys
  are loader options), else from `config.json`'s `model_type` (`Family.hf_model_types`);
- an `s3://` prefix holding such a folder, downloaded once per node (`sjd_batch.io.model_cache`);
- a hub id (`owner/name`), read from the local Hugging Face cache, or downloaded when the machine has a
  hub and `HF_HUB_OFFLINE` is not set.

Loaders are "module:function" strings, so `import sjd_batch` and `sjd-batch --help` import no model
code. A registry dict of named entries (like LlamaGen's `GPT_models`), never dispatch on substrings.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from sjd_batch.decoding.protocol import ImageTokenModel
from sjd_batch.decoding.sampling import SamplingConfig

MANIFEST = "sjd_batch.json"  # in a model folder: {"family": "<a key of FAMILIES>", **loader options}
HF_CONFIG = "config.json"
ASSETS_SHAPES = Path(__file__).resolve().parents[1] / "assets" / "shapes-t2i"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

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
    """A family's published defaults (models.md §1.1). Sampling fields become `SamplingConfig`; a job's
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
        defaults=Defaults(tokens_per_image="16·17 + 1 = 273", resolution="64x64", top_k=0, cfg_scale=3.0),
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


@dataclass(frozen=True)
class ResolvedSource:
    """Where a model loads from: the family, a local folder or hub id, and the loader options."""

    family: Family
    location: str
    options: dict[str, Any] = field(default_factory=dict)
    hub: bool = False  # `location` is a hub id still to download (not in the local cache)


def load_model(
    name: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    options: dict[str, Any] | None = None,
) -> ImageTokenModel:
    """Load a model from any source form (see the module docstring).

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
    resolve_source(name, options, fetch=False)


def resolve_source(name: str, options: dict[str, Any] | None = None, fetch: bool = True) -> ResolvedSource:
    """Family, location and options of a source. With `fetch=False` nothing is downloaded: an s3://
    prefix is checked by reading its small JSON files only.

    Raises:
        ModelSourceError: naming the source and what was expected.
    """
    entry = MODELS.get(name)
    if entry is not None:
        assert entry.source is not None, f"registered model {name} has neither factory nor source"
        try:
            return resolve_source(entry.source, options, fetch)
        except ModelSourceError as e:
            raise ModelSourceError(f"{name} is {entry.source}: {e}") from None
    family, location = _split_family(name)
    if location.startswith("s3://"):
        resolved = _resolve_s3(location, family, fetch)
    elif Path(location).expanduser().is_dir():
        resolved = _resolve_folder(Path(location).expanduser(), family)
    elif _HUB_ID.match(location):
        resolved = _resolve_hub(location, family)
    else:
        raise ModelSourceError(
            f"unknown model {name!r}: not one of the registered models {sorted(MODELS)}, not a local "
            "model folder, not an s3:// prefix and not a hub id (owner/name)"
        )
    return replace(resolved, options=_merge_options(name, resolved, options or {}))


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def read_family(folder: Path) -> str:
    """The family of a model folder (manifest, else config.json model_type); ModelSourceError if none."""
    return _family_from_files(lambda f: _read_local(folder / f), str(folder), None)[0].name


def load_shapes_folder(source: str, device: torch.device, dtype: torch.dtype) -> ImageTokenModel:
    """The `shapes` family loader: a folder like sjd_batch/assets/shapes-t2i."""
    from sjd_batch.models.shapes.model import load_shapes

    return load_shapes(device=device, dtype=dtype, assets=Path(source))


def display_name(source: str) -> str:
    """A short model name for a loader's `source`: the hub id of a cached snapshot folder
    (`.../models--owner--name/snapshots/<commit>` -> "owner/name"), a folder's own name, or the hub id."""
    path = Path(source)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name.removeprefix("models--").replace("--", "/")
    return path.name if path.is_dir() else source


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads (read now, not at import, so tests and jobs can set it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _split_family(name: str) -> tuple[Family | None, str]:
    head, sep, rest = name.partition(":")
    if sep and head in FAMILIES:
        return FAMILIES[head], rest
    if sep and not rest.startswith("//") and re.fullmatch(r"[a-z][a-z0-9-]*", head):
        raise ModelSourceError(f"model {name!r}: unknown family {head!r}; choose one of {sorted(FAMILIES)}")
    return None, name


def _resolve_folder(folder: Path, family: Family | None) -> ResolvedSource:
    found, options = _family_from_files(lambda f: _read_local(folder / f), str(folder), family)
    return ResolvedSource(found, str(folder), options)


def _resolve_s3(uri: str, family: Family | None, fetch: bool) -> ResolvedSource:
    if fetch:
        from sjd_batch.io.model_cache import fetch_model

        return _resolve_folder(fetch_model(uri), family)
    from sjd_batch.io.storage import Storage

    storage = Storage.from_uri(uri)
    files = {f: storage.read_bytes(f) if storage.exists(f) else None for f in (MANIFEST, HF_CONFIG)}
    if family is not None and not any(files.values()) and not storage.list():
        raise ModelSourceError(f"model {uri}: no objects under this prefix; expected a model folder")
    if family is None and not any(files.values()):
        raise ModelSourceError(f"model {uri}: no {MANIFEST} under this prefix; expected a model folder")
    found, options = _family_from_files(files.get, uri, family)
    return ResolvedSource(found, uri, options)


def _resolve_hub(repo: str, family: Family | None) -> ResolvedSource:
    """A hub id: its snapshot in the local HF cache, else (online) the id itself for the loader."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # a cached snapshot never touches the network
        folder = snapshot_download(repo, local_files_only=True, cache_dir=_hub_cache())
    except LocalEntryNotFoundError:
        folder = None
    if folder is not None:
        return _resolve_folder(Path(folder), family)
    if hub_offline():
        raise ModelSourceError(
            f"model {repo!r}: not a local folder, and not in the Hugging Face cache "
            f"({_hub_cache()}) while HF_HUB_OFFLINE=1 forbids downloading; download it first on a machine "
            f"with hub access (`hf download {repo}`, same HF_HOME), or set model.name to a local model "
            "folder or an s3:// prefix"
        )
    return _resolve_hub_online(repo, family)


def _resolve_hub_online(repo: str, family: Family | None) -> ResolvedSource:
    from huggingface_hub import hf_hub_download

    try:
        endpoint = os.environ.get("HF_ENDPOINT")  # read now, like HF_HUB_OFFLINE
        path = hf_hub_download(repo, HF_CONFIG, cache_dir=_hub_cache(), endpoint=endpoint)
        config = Path(path).read_bytes()
    except Exception as e:  # noqa: BLE001 - every hub failure (network, 404, auth) gets the same advice
        raise ModelSourceError(
            f"model {repo!r}: not a local folder, and the Hugging Face hub could not resolve it "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); check the id and the "
            "network, or set model.name to a local model folder or an s3:// prefix"
        ) from None
    found, options = _family_from_files({HF_CONFIG: config}.get, repo, family)
    return ResolvedSource(found, repo, options, hub=True)


def _family_from_files(
    read: Callable[[str], bytes | None], where: str, family: Family | None
) -> tuple[Family, dict[str, Any]]:
    """The family (and manifest options) of a folder, from `sjd_batch.json` or config.json's model_type."""
    manifest = read(MANIFEST)
    if manifest is not None:
        data = _parse_json(manifest, f"{where}/{MANIFEST}")
        options = {k: v for k, v in data.items() if k != "family"}
        named = data.get("family")
        if named not in FAMILIES:
            raise ModelSourceError(
                f"{where}/{MANIFEST}: unknown family {named!r}; choose one of {sorted(FAMILIES)}"
            )
        if family is not None and family.name != named:
            raise ModelSourceError(
                f"model {where}: asked for family {family.name!r}, but its {MANIFEST} says {named!r}"
            )
        return FAMILIES[named], options
    if family is not None:
        return family, {}
    config = read(HF_CONFIG)
    model_type = _parse_json(config, f"{where}/{HF_CONFIG}").get("model_type") if config else None
    for candidate in FAMILIES.values():
        if model_type in candidate.hf_model_types:
            return candidate, {}
    found = f"its {HF_CONFIG} has model_type {model_type!r}" if config else f"no {HF_CONFIG} either"
    raise ModelSourceError(
        f"model folder {where} has no {MANIFEST}, and {found}, which names no family; add "
        f'{MANIFEST} naming the family, e.g. {{"family": "shapes"}}, or write FAMILY:{where} '
        f"(families: {sorted(FAMILIES)})"
    )


def _merge_options(name: str, resolved: ResolvedSource, job: dict[str, Any]) -> dict[str, Any]:
    merged = {**resolved.options, **job}
    unknown = sorted(set(merged) - set(resolved.family.options))
    if unknown:
        allowed = sorted(resolved.family.options) or "none"
        raise ModelSourceError(
            f"model {name}: unknown option(s) {unknown} for family {resolved.family.name!r} "
            f"(from {MANIFEST} or model.options); allowed: {allowed}"
        )
    return merged


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelSourceError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(parsed, dict):
        raise ModelSourceError(f"{where}: expected a JSON object, got {type(parsed).__name__}")
    return parsed


def _read_local(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _hub_cache() -> str:
    """The hub cache as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _import(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
