"""Model sources: how a `model.name` string becomes a family, a location and loader options.

`resolve_source` (and `check_source` here and `loading.load_model`, which call it) accepts:
- a registered name (`registry.MODELS`);
- `family:source`, e.g. `emu3:BAAI/Emu3-Gen-hf` or `emu3:/models/emu3`, which names the family;
- a local folder: the family comes from its `sjd_batch.json` (`{"family": "emu3", ...}`; the other keys
  are loader options), else from `config.json`'s `model_type` (`Family.hf_model_types`);
- an `s3://` prefix holding such a folder, downloaded once per node (`sjd_batch.io.model_cache`);
- a hub id (`owner/name`), read from the local Hugging Face cache, or downloaded when the machine has a
  hub and `HF_HUB_OFFLINE` is not set.

Also here: `display_name` (a short name for a loader's source) and `hub_offline`. The tables this
reads (`FAMILIES`, `MODELS`) live in `registry.py`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from sjd_batch.models.family import MANIFEST, Family, ModelSourceError
from sjd_batch.models.registry import FAMILIES, MODELS

HF_CONFIG = "config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedSource:
    """Where a model loads from: the family, a local folder or hub id, and the loader options."""

    family: Family
    location: str
    options: dict[str, Any] = field(default_factory=dict)
    hub: bool = False  # `location` is a hub id still to download (not in the local cache)


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
    from sjd_batch.io.backends import open_storage

    storage = open_storage(uri)
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
