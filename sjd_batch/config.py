"""`JobConfig`: one job YAML, validated on load into typed sections.

A job file has seven sections (see `jobs/demo.yaml`): `name`, `model`, `method`, `sampling`, `input`,
`output` and `run`. The schema is the pydantic models below; `sjd-batch schema` prints it as JSON Schema
(`docs/job-schema.json`). Every error names the file, the key path and what was expected, e.g.
``jobs/demo.yaml: method.windw: unknown key (did you mean 'window'?)`` (`config_errors.py`).

The typed path of one parameter: YAML `sampling.top_p` -> `SamplingSection.top_p` ->
`SamplingSection.over(model.default_sampling)` -> `SamplingConfig.top_p`, which the sampler reads.
Method parameters likewise end in the engine's `DecodeConfig` (`MethodSection.decode_config`).

The job id is not here: it also covers the inputs' identity (`sjd_batch.identity`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from sjd_batch.config_errors import ConfigError, describe
from sjd_batch.decoding import DecodeConfig, SamplingConfig, resolve_method
from sjd_batch.decoding.methods import COUPLINGS, INIT_LAWS, INIT_SCHEMES, METHODS, VERIFIERS, VP_FORMS
from sjd_batch.decoding.sampling import CFG_MODES
from sjd_batch.io.storage import StorageError, check_uri, scrub_credentials

__all__ = ["ConfigError", "JobConfig", "load_job", "parse_job"]

IMAGE_FORMATS = ("png", "webdataset", "parquet")  # io/formats.py
_URI_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")
T = TypeVar("T")


class _Section(BaseModel):
    # strict: a YAML `true` is not an int and "8" is not a number; ints still widen to floats.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ModelSection(_Section):
    """Which model to load (see `sjd_batch.models.registry`), plus the family's loader options."""

    name: str = Field(description="a registered name, family:source, a local model folder, an s3:// "
                                  "prefix or a hub id")
    dtype: str = Field("float32", description="float32 | bfloat16 | float16 (checked against the registry)")
    device: str = Field("auto", description="auto: cuda when the actor holds a GPU, else cpu")
    options: dict[str, Any] = Field(default_factory=dict, description="family loader options, e.g. "
                                                                       "{image_area: 262144} for emu3")
    compile: bool = Field(False, description="torch.compile the window forward (GPU)")


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


NonBlank = Annotated[str, Field(min_length=1), AfterValidator(_not_blank)]


def _valid_uri(uri: str) -> str:
    """`s3:/b/x` (one slash) and URIs carrying credentials are refused here, before `absolute_paths`
    turns the first into a local folder; the message never repeats a credential."""
    try:
        return check_uri(uri)
    except StorageError as e:
        raise ValueError(str(e)) from None


Uri = Annotated[str, Field(min_length=1), AfterValidator(_not_blank), AfterValidator(_valid_uri)]


def _int_or_auto(value: Any, minimum: int | None) -> Any:
    """An integer (>= `minimum`), or "auto" (measured by each actor: `sjd_batch/tuning.py`). Checked
    before pydantic's union, whose two-branch error would not say what is expected."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an int or 'auto', got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"must be >= {minimum} or 'auto', got {value!r}")
    return value


def _pick(value: T | None, default: T) -> T:
    return default if value is None else value


class MethodSection(_Section):
    """The decoding method and its parameters; an unset parameter keeps the method's preset.

    The fields mirror `DecodeConfig` (a test keeps them in step); see its docstring for their meaning.
    """

    name: str = Field("mc-sjd", json_schema_extra={"enum": sorted(METHODS)}, description="the method")
    window: int | Literal["auto"] | None = Field(
        None, description="L, the tokens fed to one forward (last committed + L-1 drafts), >= 2; auto: each "
        "actor measures and picks the window with the most images/s on its hardware (sjd_batch/tuning.py)")
    init: Literal[INIT_SCHEMES] | None = Field(None, description="how a draft entering the window is chosen")
    init_law: Literal[INIT_LAWS] | None = Field(None, description="law stored for random init drafts")
    vp_lambda: float | None = Field(None, description="SJD-VP strength; 0 is plain SJD")
    vp_form: Literal[VP_FORMS] | None = Field(None, description="SJD-VP form")
    vp_clip: float | None = Field(None, description="clip c of the log-probability change (exp form)")
    vp_lossy: bool | None = Field(None, description="LOSSY on purpose: draw from q~, verify against P")
    coupling: Literal[COUPLINGS] | None = Field(
        None, description="independent | maximal (MC-SJD; SJD-PAC's Adaptive Continuation) | gumbel")
    verifier: Literal[VERIFIERS] | None = Field(None, description="speculative | exact")
    tree_width: int | None = Field(None, description="K, drafts per depth after a rejection; 1: a chain")
    tree_depth: int | None = Field(None, description="D, depths below the last committed token that branch")

    @field_validator("window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> Any:
        return _int_or_auto(value, None)  # the method's own bound (>= 2) is checked by `decode_config`

    @model_validator(mode="before")
    @classmethod
    def _name_only(cls, raw: Any) -> Any:
        return {"name": raw} if isinstance(raw, str) else raw  # `method: sjd`

    @model_validator(mode="after")
    def _resolves(self) -> MethodSection:
        self.decode_config()  # unknown method, window < 2, ...: a ValueError naming the parameter
        return self

    def decode_config(self) -> DecodeConfig:
        """The engine's settings: the named preset with every parameter set here on top."""
        p = resolve_method(self.name)
        window = p.window if self.window == "auto" else _pick(self.window, p.window)  # auto: the actor's
        return replace(
            p, window=window, init=_pick(self.init, p.init),
            init_law=_pick(self.init_law, p.init_law), vp_lambda=_pick(self.vp_lambda, p.vp_lambda),
            vp_form=_pick(self.vp_form, p.vp_form), vp_clip=_pick(self.vp_clip, p.vp_clip),
            vp_lossy=_pick(self.vp_lossy, p.vp_lossy), coupling=_pick(self.coupling, p.coupling),
            verifier=_pick(self.verifier, p.verifier), tree_width=_pick(self.tree_width, p.tree_width),
            tree_depth=_pick(self.tree_depth, p.tree_depth),
        )

    def params(self) -> dict[str, Any]:
        """The parameters set in the job (for job.json and the YAML form)."""
        return self.model_dump(exclude_none=True, exclude={"name"})


class SamplingSection(_Section):
    """Sampling settings; an unset one keeps the model's default (`ImageTokenModel.default_sampling`).

    The fields mirror `SamplingConfig` (a test keeps them in step); see its docstring.
    """

    temperature: float | None = Field(None, description="0 means greedy")
    top_k: int | None = Field(None, description="0 is off")
    top_p: float | None = Field(None, description="nucleus mass in (0, 1]")
    cfg_scale: float | None = Field(None, description="classifier-free guidance s; 1 disables CFG")
    cfg_mode: Literal[CFG_MODES] | None = Field(None, description="raw | log-softmax")

    @model_validator(mode="after")
    def _valid(self) -> SamplingSection:
        self.over(SamplingConfig())  # range checks live in SamplingConfig
        return self

    def over(self, base: SamplingConfig) -> SamplingConfig:
        """These settings on top of `base` (the model's defaults)."""
        return replace(
            base, temperature=_pick(self.temperature, base.temperature), top_k=_pick(self.top_k, base.top_k),
            top_p=_pick(self.top_p, base.top_p), cfg_scale=_pick(self.cfg_scale, base.cfg_scale),
            cfg_mode=_pick(self.cfg_mode, base.cfg_mode),
        )


class InputSection(_Section):
    """Parquet files or prefixes (local or s3://) with a `prompt` column, split into shards."""

    uris: Annotated[tuple[Annotated[StrictStr, AfterValidator(_valid_uri)], ...],
                    Field(strict=False, min_length=1)] = Field(
        description="Parquet files or prefixes, local or s3:// (one URI may be given as a string)")
    shard_size: int = Field(64, ge=1, description="rows per shard; shards never cross files")

    @field_validator("uris", mode="before")
    @classmethod
    def _one_uri(cls, raw: Any) -> Any:
        return [raw] if isinstance(raw, str) else raw


class OutputSection(_Section):
    """Where images, stats and commit markers go (local folder or s3://bucket/prefix)."""

    uri: Uri = Field(description="local folder or s3://bucket/prefix")
    image_format: Literal[IMAGE_FORMATS] = Field(
        "png", description="png (one object per sample, plus metadata.jsonl per shard) | webdataset (one tar "
                           "per shard) | parquet (one Parquet file of images per shard)")


class RunSection(_Section):
    """How the job executes. Only `seed` changes what it produces (see `sjd_batch.identity`)."""

    batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        8, description="samples decoded together per actor; auto: each actor measures and picks the size "
        "with the most images/s on its hardware (sjd_batch/tuning.py)")
    num_actors: int = Field(1, ge=1, description="Ray actors")
    gpus_per_actor: float = Field(0.0, ge=0, description="1 on GPU clusters: one actor per GPU")
    cpus_per_actor: float = Field(1.0, ge=0, description="CPUs reserved per actor (torch threads)")
    seed: int = Field(0, description="job seed; sample seed = blake2b(seed, sample_id)")
    max_retries: int = Field(2, ge=0, description="retries of a failing shard before the job reports it")
    upload_threads: int = Field(4, ge=1, description="threads encoding and uploading images")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        return _int_or_auto(value, 1)


class JobConfig(_Section):
    """A whole job, as loaded from YAML (see the module docstring)."""

    name: NonBlank = Field(description="the job's name (shown in summaries and reports)")
    model: ModelSection
    input: InputSection
    output: OutputSection
    method: MethodSection = Field(default_factory=MethodSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    run: RunSection = Field(default_factory=RunSection)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        if isinstance(raw, dict):  # `sampling:` with nothing under it is an empty section
            optional = ("method", "sampling", "run")
            return {k: ({} if v is None and k in optional else v) for k, v in raw.items()}
        return raw

    def to_dict(self) -> dict[str, Any]:
        """The job file's data (method parameters inline); URIs lose any user:password@ part."""
        data = self.model_dump(exclude={"method", "sampling"})
        data["method"] = {"name": self.method.name, **self.method.params()}
        data["sampling"] = self.sampling.model_dump(exclude_none=True)
        data["input"]["uris"] = [redact_uri(u) for u in self.input.uris]
        data["output"]["uri"] = redact_uri(self.output.uri)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    def to_yaml(self) -> str:
        """A job file that loads back to this config (URIs as given: redaction would change the job)."""
        data = self.to_dict()
        data["input"]["uris"] = list(self.input.uris)
        data["output"]["uri"] = self.output.uri
        return yaml.safe_dump(data, sort_keys=False)


def redact_uri(uri: str) -> str:
    """Drop the userinfo of a URI (s3://KEY:SECRET@bucket -> s3://bucket)."""
    return _URI_USERINFO.sub(r"\1", uri)


def job_schema() -> dict[str, Any]:
    """The job file's JSON Schema (what `sjd-batch schema` prints and docs/job-schema.json holds)."""
    return JobConfig.model_json_schema()


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


def parse_job(raw: Any, source: str = "<job>") -> JobConfig:
    """Validate raw YAML data into a JobConfig (see `load_job`)."""
    try:
        return JobConfig.model_validate(raw)
    except ValidationError as e:
        text = "\n".join(describe(err, source, JobConfig) for err in e.errors())
        raise ConfigError(scrub_credentials(text)) from None  # errors may quote a URI as given


def absolute_paths(job: JobConfig) -> JobConfig:
    """Local relative paths become absolute (relative to the current directory), so that every
    actor, whatever its working directory, reads and writes the same files. The job id does not
    depend on them (`sjd_batch.identity`), so a job run from another folder is the same job."""

    def fix(uri: str) -> str:
        return uri if "://" in uri or os.path.isabs(uri) else os.path.abspath(uri)

    inputs = job.input.model_copy(update={"uris": tuple(fix(u) for u in job.input.uris)})
    output = job.output.model_copy(update={"uri": fix(job.output.uri)})
    return job.model_copy(update={"input": inputs, "output": output})


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
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if isinstance(child, str) and part == "method" and i == 0:
            child = node[part] = {"name": child}  # `method: sjd` in the file, `--set method.window=8`
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: --set {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value
