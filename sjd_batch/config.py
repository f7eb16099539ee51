"""`JobConfig`: one job YAML, validated on load.

A job file has six sections (see `jobs/demo.yaml`): `name`, `model`, `method`, `sampling`, `input`,
`output` and `run`. Every error names the key path and the file, e.g.
``jobs/demo.yaml: method.windw: unknown key (did you mean 'window'?)``.

`job_id` hashes what determines the outputs (model, method, sampling, input, output, shard size,
image format, seed, batch size), and not how the job is executed (actors, GPUs, CPUs, retries): a job
can be resumed on a different cluster, but never with different settings into the same output.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from sjd_batch.decoding import DecodeConfig, SamplingConfig, resolve_method

IMAGE_FORMATS = ("png", "webdataset")
_URI_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


class ConfigError(ValueError):
    """A job file (or a --set override) is invalid; the message names the file and the key path."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model to load: a registered name, `family:source`, a local folder, an s3:// prefix or a hub
    id (see `sjd_batch.models.registry`), plus the family's loader options (e.g. Emu3's `image_area`)."""

    name: str
    dtype: str = "float32"
    device: str = "auto"  # "auto": cuda when the actor has a GPU, else cpu
    options: Mapping[str, Any] = field(default_factory=dict)
    compile: bool = False  # torch.compile the window forward (sjd_batch.models.compiled); for GPUs


@dataclass(frozen=True)
class MethodConfig:
    """The decoding method and its overrides (DecodeConfig fields; unset ones keep the preset)."""

    name: str = "sjd-vp"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InputConfig:
    """Parquet files or prefixes (local or s3://) with a `prompt` column, split into shards."""

    uris: tuple[str, ...]
    shard_size: int = 64


@dataclass(frozen=True)
class OutputConfig:
    """Where images, stats and commit markers go (local folder or s3://bucket/prefix)."""

    uri: str
    image_format: str = "png"


@dataclass(frozen=True)
class RunConfig:
    """How the job executes: none of this changes the outputs, so it is not part of `job_id`."""

    batch_size: int = 8
    num_actors: int = 1
    gpus_per_actor: float = 0.0
    cpus_per_actor: float = 1.0
    seed: int = 0
    max_retries: int = 2
    upload_threads: int = 4


@dataclass(frozen=True)
class JobConfig:
    """A whole job, as loaded from YAML (see the module docstring for the layout)."""

    name: str
    model: ModelConfig
    input: InputConfig
    output: OutputConfig
    method: MethodConfig = field(default_factory=MethodConfig)
    sampling: Mapping[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def job_id(self) -> str:
        """A stable id of what the job produces (16 hex digits of blake2b)."""
        identity = self.to_dict()
        run = identity.pop("run")
        identity["seed"], identity["batch_size"] = run["seed"], run["batch_size"]
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.blake2b(blob, digest_size=8).hexdigest()

    @property
    def generate_params(self) -> dict[str, Any]:
        """Keyword arguments for `sjd_batch.generate` (decoding overrides plus sampling)."""
        return {**dict(self.method.params), **dict(self.sampling)}

    def to_dict(self) -> dict[str, Any]:
        """Plain data; URIs lose any user:password@ part, so no credential is ever stored."""
        data = dataclasses.asdict(self)
        data["model"]["options"] = dict(self.model.options)
        if not data["model"]["options"]:
            del data["model"]["options"]  # jobs without options keep the job_id they had before the key
        if not data["model"]["compile"]:
            del data["model"]["compile"]  # likewise
        data["method"]["params"] = dict(self.method.params)
        data["sampling"] = dict(self.sampling)
        data["input"]["uris"] = [redact_uri(u) for u in self.input.uris]
        data["output"]["uri"] = redact_uri(self.output.uri)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def to_yaml(self) -> str:
        """A job file that loads back to this config (method parameters inline, as in the YAML)."""
        data = self.to_dict()
        method = data.pop("method")
        data["method"] = {"name": method["name"], **method["params"]}
        data["input"]["uris"] = list(self.input.uris)  # as given: redaction would change the job
        data["output"]["uri"] = self.output.uri
        return yaml.safe_dump(data, sort_keys=False)


def redact_uri(uri: str) -> str:
    """Drop the userinfo of a URI (s3://KEY:SECRET@bucket -> s3://bucket)."""
    return _URI_USERINFO.sub(r"\1", uri)


def load_job(path: str | Path, overrides: Sequence[str] = ()) -> JobConfig:
    """Load and validate a job YAML, applying `key.sub=value` overrides first.

    Raises:
        ConfigError: naming the file and key path of an unknown key, wrong type or missing field.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the job file: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the job file must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, str(path))
    return absolute_paths(parse_job(raw, str(path)))


def absolute_paths(job: JobConfig) -> JobConfig:
    """Local relative paths become absolute (relative to the current directory), so that every
    actor, whatever its working directory, reads and writes the same files."""

    def fix(uri: str) -> str:
        return uri if "://" in uri or os.path.isabs(uri) else os.path.abspath(uri)

    return dataclasses.replace(
        job,
        input=dataclasses.replace(job.input, uris=tuple(fix(u) for u in job.input.uris)),
        output=dataclasses.replace(job.output, uri=fix(job.output.uri)),
    )


def apply_override(raw: dict[str, Any], item: str, source: str = "--set") -> None:
    """Apply one `a.b.c=value` override to raw YAML data; the value is parsed as YAML (32, true, [a])."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{source}: --set {item!r}: expected KEY.SUB=VALUE")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: --set {item!r}: value is not valid YAML: {e}") from e
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: --set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def parse_job(raw: Mapping[str, Any], source: str = "<job>") -> JobConfig:
    """Validate raw YAML data into a JobConfig (see `load_job`)."""
    raw = dict(raw)
    if isinstance(raw.get("input"), dict) and isinstance(raw["input"].get("uris"), str):
        raw["input"] = {**raw["input"], "uris": [raw["input"]["uris"]]}  # one URI is a list of one
    method_raw = raw.pop("method", {}) or {}
    sampling_raw = raw.pop("sampling", {}) or {}
    job = _build(JobConfig, raw, source, "", skip={"method", "sampling"})
    method = _parse_method(method_raw, source)
    sampling = _parse_params(sampling_raw, SamplingConfig, source, "sampling")
    job = dataclasses.replace(job, method=method, sampling=sampling)
    _check_values(job, source)
    return job


def _parse_method(raw: Any, source: str) -> MethodConfig:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: method: expected a mapping or a method name, got {type(raw).__name__}")
    raw = dict(raw)
    name = raw.pop("name", MethodConfig.name)
    if not isinstance(name, str):
        raise ConfigError(f"{source}: method.name: expected str, got {type(name).__name__} ({name!r})")
    params = _parse_params(raw, DecodeConfig, source, "method", skip={"method"}, extra=["name"])
    try:
        resolve_method(name, **params)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: method: {e}") from e
    return MethodConfig(name=name, params=params)


def _parse_params(
    raw: Any, cls: type, source: str, path: str, skip: set[str] = frozenset(), extra: Sequence[str] = ()
) -> dict[str, Any]:
    """Check a flat override mapping against the fields (and types) of a core dataclass."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {path}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    allowed = [f.name for f in fields(cls) if f.name not in skip]
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            raise ConfigError(_unknown(source, f"{path}.{key}", str(key), [*allowed, *extra]))
        out[key] = _coerce(value, hints[key], source, f"{path}.{key}")
    if cls is SamplingConfig:
        try:
            SamplingConfig(**out)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{source}: sampling: {e}") from e
    return out


def _build(cls: type, raw: Any, source: str, path: str, skip: set[str] = frozenset()) -> Any:
    """Build a frozen dataclass from a mapping, naming the key path of the first problem."""
    where = path or "the job"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for key in raw:
        if key not in known:
            raise ConfigError(_unknown(source, _join(path, str(key)), str(key), known))
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        key = _join(path, f.name)
        if f.name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{source}: {key}: missing required field")
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(hint, raw[f.name] if raw[f.name] is not None else {}, source, key)
        else:
            kwargs[f.name] = _coerce(raw[f.name], hint, source, key)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, source: str, key: str) -> Any:
    """Check a YAML scalar against a type hint; ints widen to float, lists become tuples."""
    origin = typing.get_origin(hint)
    if origin is collections.abc.Mapping:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: {key}: expected a mapping of names to values, got {value!r}")
        return dict(value)
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            raise ConfigError(f"{source}: {key}: expected a non-empty list of strings, got {value!r}")
        return tuple(_coerce(v, typing.get_args(hint)[0], source, f"{key}[{i}]") for i, v in enumerate(items))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{source}: {key}: expected {name}, got {type(value).__name__} ({value!r})")
    return value


def _check_values(job: JobConfig, source: str) -> None:
    checks = [
        (job.input.shard_size >= 1, "input.shard_size", "must be >= 1"),
        (job.run.batch_size >= 1, "run.batch_size", "must be >= 1"),
        (job.run.num_actors >= 1, "run.num_actors", "must be >= 1"),
        (job.run.gpus_per_actor >= 0, "run.gpus_per_actor", "must be >= 0"),
        (job.run.cpus_per_actor >= 0, "run.cpus_per_actor", "must be >= 0"),
        (job.run.max_retries >= 0, "run.max_retries", "must be >= 0"),
        (job.run.upload_threads >= 1, "run.upload_threads", "must be >= 1"),
        (job.output.image_format in IMAGE_FORMATS, "output.image_format", f"must be one of {IMAGE_FORMATS}"),
        (bool(job.name.strip()), "name", "must not be empty"),
        (bool(job.output.uri.strip()), "output.uri", "must not be empty"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"{source}: {key}: {why}")


def _unknown(source: str, key: str, name: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{source}: {key}: unknown key{hint}; allowed: {sorted(allowed)}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
