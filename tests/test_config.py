"""JobConfig: YAML loading, clear errors naming file and key path, --set overrides, the typed path to the
engine's settings, the job id, the published JSON Schema, no credentials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sjd_batch.config import (
    ConfigError,
    JobConfig,
    MethodSection,
    SamplingSection,
    apply_override,
    job_schema,
    load_job,
    parse_job,
)
from sjd_batch.decoding import DecodeConfig, SamplingConfig
from sjd_batch.identity import job_id
from sjd_batch.io.shards import InputFile

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "model": {"name": "tiny-random"},
    "method": {"name": "sjd", "window": 8},
    "sampling": {"cfg_scale": 3.0},
    "input": {"uris": ["in.parquet"], "shard_size": 4},
    "output": {"uri": "/tmp/out"},
    "run": {"batch_size": 2, "num_actors": 2},
}


def write_job(tmp_path: Path, data: dict, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def with_(key: str, value: object) -> dict:
    raw = json.loads(json.dumps(BASE))
    apply_override(raw, f"{key}={json.dumps(value)}")
    return raw


def test_example_jobs_load() -> None:
    for path in sorted((REPO / "jobs").glob("*.yaml")):
        job = load_job(path)
        assert job.name and len(job_id(job, INPUTS)) == 16


def test_defaults_and_types(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, BASE))
    assert isinstance(job, JobConfig)
    assert job.method.name == "sjd" and job.method.params() == {"window": 8}
    assert job.run.gpus_per_actor == 0.0 and job.output.image_format == "png"
    assert job.method.decode_config() == DecodeConfig(method="sjd", window=8)
    assert job.sampling.over(SamplingConfig(top_p=0.8)) == SamplingConfig(top_p=0.8, cfg_scale=3.0)
    # relative local paths become absolute, so actors in other directories see the same files
    assert job.input.uris == (str(Path.cwd() / "in.parquet"),)


@pytest.mark.parametrize(
    "raw, message",
    [
        (with_("method.windw", 3), "job.yaml: method.windw: unknown key (did you mean 'window'?)"),
        (with_("run.batch_sise", 3), "run.batch_sise: unknown key (did you mean 'batch_size'?)"),
        (with_("outptu", {}), "outptu: unknown key (did you mean 'output'?)"),
        (with_("sampling.temprature", 1), "sampling.temprature: unknown key (did you mean 'temperature'?)"),
        (with_("run.batch_size", "eight"), "run.batch_size: expected an int or 'auto', got str ('eight')"),
        (with_("run.num_actors", True), "run.num_actors: expected int, got bool"),
        (with_("input.uris", []), "input.uris: expected a non-empty list of strings"),
        (with_("input.uris", [3]), "input.uris[0]: expected str, got int"),
        (with_("run", 5), "run: expected a mapping, got int"),
        (with_("method.name", "fast"), "method: unknown method 'fast'"),
        (with_("method.window", 1), "window must be >= 2"),
        (with_("method.window", "big"), "method.window: expected an int or 'auto', got str ('big')"),
        (with_("sampling.top_p", 2.0), "top_p must be in (0, 1]"),
        (with_("output.image_format", "jpg"),
         "output.image_format: must be one of ('png', 'webdataset', 'parquet')"),
        (with_("run.batch_size", 0), "run.batch_size: must be >= 1"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_job(write_job(tmp_path, raw))
    assert message in str(err.value)
    assert str(tmp_path / "job.yaml") in str(err.value)


@pytest.mark.parametrize(
    "section, key", [("model", "name"), ("input", "uris"), ("output", "uri"), ("", "name")]
)
def test_missing_fields(tmp_path: Path, section: str, key: str) -> None:
    raw = json.loads(json.dumps(BASE))
    (raw[section] if section else raw).pop(key)
    with pytest.raises(ConfigError, match=f"{section + '.' if section else ''}{key}: missing required field"):
        load_job(write_job(tmp_path, raw))


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the job file"):
        load_job(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_job(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_job(tmp_path / "list.yaml")


def test_set_overrides(tmp_path: Path) -> None:
    path = write_job(tmp_path, BASE)
    sets = ["method.window=32", "run.seed=7", "sampling.top_k=5", "input.uris=[a.parquet, b.parquet]"]
    job = load_job(path, sets)
    assert job.method.window == 32 and job.run.seed == 7 and job.sampling.top_k == 5
    assert [Path(u).name for u in job.input.uris] == ["a.parquet", "b.parquet"]
    with pytest.raises(ConfigError, match=r"--set 'run.seed': expected KEY.SUB=VALUE"):
        load_job(path, ["run.seed"])
    with pytest.raises(ConfigError, match="run.sed: unknown key \\(did you mean 'seed'\\?\\)"):
        load_job(path, ["run.sed=1"])
    with pytest.raises(ConfigError, match="--set name.x: name is not a section"):
        load_job(path, ["name.x=1"])


INPUTS = [InputFile("/a/in.parquet", 10, True, 1234, "0" * 16)]


def test_job_id_tracks_outputs_not_execution(tmp_path: Path) -> None:
    path = write_job(tmp_path, BASE)
    base = job_id(load_job(path), INPUTS)
    assert job_id(load_job(path), INPUTS) == base  # stable
    for same in ["run.num_actors=7", "run.gpus_per_actor=1", "run.cpus_per_actor=2", "run.max_retries=9",
                 "run.batch_size=5", "run.upload_threads=1", "name=other", "output.uri=/elsewhere",
                 "input.uris=[/some/other/folder/in.parquet]", "method.window=8"]:
        assert job_id(load_job(path, [same]), INPUTS) == base, same
    for other in ["run.seed=1", "method.window=4", "sampling.cfg_scale=2", "input.shard_size=5",
                  "model.dtype=bf16", "output.image_format=webdataset", "method.name=mc-sjd",
                  "method.vp_lambda=0.5", "sampling.top_p=0.9"]:
        assert job_id(load_job(path, [other]), INPUTS) != base, other
    # the inputs' identity: name, size and footer digest, in plan order
    assert job_id(load_job(path), [InputFile("/elsewhere/in.parquet", 10, True, 1234, "0" * 16)]) == base
    for inputs in ([InputFile("/a/in.parquet", 10, True, 1235, "0" * 16)],
                   [InputFile("/a/in.parquet", 10, True, 1234, "1" * 16)],
                   [InputFile("/a/other.parquet", 10, True, 1234, "0" * 16)], INPUTS * 2):
        assert job_id(load_job(path), inputs) != base, inputs


def test_method_presets_and_overrides_resolve_once(tmp_path: Path) -> None:
    """The same method written two ways is the same job: the id hashes the resolved DecodeConfig."""
    a = parse_job(with_("method", "sjd-vp"))
    b = parse_job(with_("method", {"name": "sjd", "vp_lambda": 0.5}))
    assert a.method.decode_config().vp_lambda == b.method.decode_config().vp_lambda == 0.5
    assert parse_job(with_("method", "sjd")).method == MethodSection(name="sjd")


def test_sections_mirror_the_engine_configs() -> None:
    """Every engine parameter is settable in a job, with the engine's type (one typed path, no dicts)."""
    import dataclasses
    import typing

    pairs = ((MethodSection, DecodeConfig, {"method"}), (SamplingSection, SamplingConfig, set()))
    for section, engine, skip in pairs:
        names = [f.name for f in dataclasses.fields(engine) if f.name not in skip]
        assert [n for n in section.model_fields if n != "name"] == names, section
        hints = typing.get_type_hints(engine)
        for name in names:
            allowed = typing.get_args(section.model_fields[name].annotation)
            base = {typing.get_origin(a) or a for a in allowed} - {type(None)}
            assert base <= {hints[name], typing.Literal}, (section, name, allowed)


def test_published_schema_is_current() -> None:
    published = json.loads((REPO / "docs" / "job-schema.json").read_text())
    current = json.loads(json.dumps(job_schema()))
    assert published == current, "regenerate it: sjd-batch schema > docs/job-schema.json"
    assert published["properties"]["run"]["$ref"].endswith("RunSection")
    batch = published["$defs"]["RunSection"]["properties"]["batch_size"]["anyOf"]
    assert {"type": "integer", "minimum": 1} in batch and {"const": "auto", "type": "string"} in batch


def test_credentials_in_uris_are_refused_without_echoing_them(tmp_path: Path) -> None:
    """A URI with a credential never gets as far as job.json, a log or Ray's job table."""
    for key, value in [("output.uri", "s3://AKIASECRET:hunter2@bucket/out"),
                       ("input.uris", ["s3://AKIASECRET:hunter2@bucket/in.parquet"])]:
        with pytest.raises(ConfigError, match="credentials in a URI are refused") as e:
            parse_job(with_(key, value))
        assert "hunter2" not in str(e.value) and "AKIASECRET" not in str(e.value)
    with pytest.raises(ConfigError, match=r"output.uri: 's3:/bucket/out' is not a valid URI"):
        parse_job(with_("output.uri", "s3:/bucket/out"))


def test_yaml_round_trip(tmp_path: Path) -> None:
    job = load_job(write_job(tmp_path, BASE), ["method.vp_lambda=0.5"])
    again = load_job(write_job(tmp_path, yaml.safe_load(job.to_yaml()), "again.yaml"))
    assert again == job and job_id(again, INPUTS) == job_id(job, INPUTS)
