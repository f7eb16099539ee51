"""Loading models by name, from a local folder, and from an s3:// prefix cached once per node."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import torch

import sjd_batch
from sjd_batch.io.model_cache import fetch_model
from sjd_batch.models.registry import ASSETS_SHAPES, MANIFEST, check_source


def _copy_shapes(dest: Path) -> Path:
    shutil.copytree(ASSETS_SHAPES, dest)
    return dest


def test_folder_loads_the_same_model_as_the_name(tmp_path):
    folder = _copy_shapes(tmp_path / "my-model")
    by_name = sjd_batch.load_model("shapes-t2i")
    by_path = sjd_batch.load_model(str(folder))
    a = sjd_batch.generate(by_name, ["a large red circle at top left"], method="sjd", decode_images=False)
    b = sjd_batch.generate(by_path, ["a large red circle at top left"], method="sjd", decode_images=False)
    assert torch.equal(a[0].tokens, b[0].tokens)


def test_folder_without_manifest_or_with_unknown_family(tmp_path):
    folder = _copy_shapes(tmp_path / "m")
    (folder / MANIFEST).unlink()
    with pytest.raises(ValueError, match="has no sjd_batch.json"):
        sjd_batch.load_model(str(folder))
    (folder / MANIFEST).write_text(json.dumps({"family": "dalle"}))
    with pytest.raises(ValueError, match="unknown family 'dalle'"):
        check_source(str(folder))


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a local model folder"):
        sjd_batch.load_model(str(tmp_path / "nope"))


def _upload(s3_endpoint: str, bucket: str) -> str:
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    for path in ASSETS_SHAPES.iterdir():
        client.put_object(Bucket=bucket, Key=f"models/shapes/{path.name}", Body=path.read_bytes())
    return f"s3://{bucket}/models/shapes"


@pytest.mark.s3
def test_s3_prefix_is_downloaded_once_per_node(s3_endpoint, bucket, tmp_path, monkeypatch):
    uri = _upload(s3_endpoint, bucket)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("SJD_BATCH_CACHE", str(tmp_path / "cache"))
    check_source(uri)
    # two processes race for the same model: one downloads, the other waits on the lock
    code = f"from sjd_batch.io.model_cache import fetch_model; print(fetch_model({uri!r}))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    folders = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(folders) == 1
    folder = Path(folders.pop())
    stamp = (folder / ".complete").stat().st_mtime_ns
    assert fetch_model(uri) == folder and (folder / ".complete").stat().st_mtime_ns == stamp  # cached
    model = sjd_batch.load_model(uri)
    assert model.name == "shapes-t2i" and model.layout.length == 273


@pytest.mark.s3
def test_empty_s3_prefix_is_refused(s3_endpoint, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("SJD_BATCH_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="no sjd_batch.json under this prefix"):
        check_source(f"s3://{bucket}/nothing")
