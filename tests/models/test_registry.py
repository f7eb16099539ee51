"""Loading models by name, `family:source`, a local folder, a hub id (cache or hub) and an s3:// prefix cached
once per node; the family contract (tests/models/contract.py) on tiny-random and a shapes folder."""

from __future__ import annotations

import dataclasses
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
import torch

import sjd_batch
from sjd_batch.io.model_cache import fetch_model
from sjd_batch.models.registry import MANIFEST
from sjd_batch.models.shapes import ASSETS as ASSETS_SHAPES
from sjd_batch.models.sources import check_source, resolve_source
from tests.models.contract import (
    assert_greedy_methods_match_ar,
    assert_layout,
    assert_runner_writes_png,
    assert_window_matches_stepwise,
    hub_cache_entry,
)

PROMPTS = ["w1 w2", "a red circle at the top left of the picture", "w3"]


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


def test_family_prefix_and_folder_options(tmp_path):
    folder = _copy_shapes(tmp_path / "m")
    model = sjd_batch.load_model(f"shapes:{folder}")
    assert model.name == "shapes-t2i" and model.layout.length == 273
    (folder / MANIFEST).write_text(json.dumps({"family": "shapes", "resolution": 128}))
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['resolution'\] for family 'shapes'"):
        check_source(str(folder))
    with pytest.raises(ValueError, match="asked for family 'emu3', but its sjd_batch.json says 'shapes'"):
        check_source(f"emu3:{folder}")
    with pytest.raises(ValueError, match="unknown family 'dalle'"):
        check_source(f"dalle:{folder}")
    with pytest.raises(ValueError, match="takes no options"):
        sjd_batch.load_model("tiny-random", options={"x": 1})


def test_folder_without_manifest_is_recognised_by_model_type(tmp_path):
    folder = _copy_shapes(tmp_path / "m")
    (folder / MANIFEST).unlink()
    with pytest.raises(ValueError, match="config.json has model_type 'llama', which names no family"):
        check_source(str(folder))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "emu3"}))
    assert resolve_source(str(folder)).family.name == "emu3"  # resolved, not loaded: these are llama weights


def test_hub_id_offline_loads_from_the_cache_or_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_cache_entry(tmp_path / "hub", "acme/shapes", ASSETS_SHAPES)
    model = sjd_batch.load_model("acme/shapes")
    assert model.name == "shapes-t2i" and model.layout.length == 273
    with pytest.raises(ValueError, match=r"'acme/missing': not a local folder, and not in the Hugging Face "
                                         r"cache .* HF_HUB_OFFLINE=1 .*`hf download acme/missing`"):
        sjd_batch.load_model("acme/missing")
    with pytest.raises(ValueError, match="'BAAI/Emu3-Gen-hf': not a local folder"):
        check_source("emu3-gen")  # the registered alias resolves to the hub id


class _NoSuchRepo(http.server.BaseHTTPRequestHandler):
    """A hub endpoint that knows no repository (404 at once: huggingface_hub retries only 5xx and
    connection errors, with back-off, which would make this test take 25 s)."""

    def do_HEAD(self) -> None:  # noqa: N802 - the http.server hook name
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


def test_hub_that_cannot_resolve_the_id_is_a_clear_error(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchRepo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        with pytest.raises(ValueError, match="'acme/shapes': not a local folder, and the Hugging Face hub "
                                             "could not resolve it .*RepositoryNotFoundError"):
            check_source("acme/shapes")
    finally:
        server.shutdown()
        server.server_close()


def test_contract_on_tiny_random():
    model = sjd_batch.load_model("tiny-random")
    assert_window_matches_stepwise(model, PROMPTS)
    tokens = assert_greedy_methods_match_ar(model, PROMPTS, window=8)
    assert_layout(model, tokens, height_px=32, width_px=32)


@pytest.mark.ray
def test_contract_runner_on_a_shapes_folder(tmp_path, ray_session):
    folder = _copy_shapes(tmp_path / "model")
    assert_runner_writes_png(str(folder), tmp_path, height_px=64, width_px=64, window=16)


class _OffByOnePositions:
    """tiny-random with a bug the harness must catch: single-token decode windows get position + 1."""

    def __init__(self, model) -> None:
        self.__dict__.update(vars(model))
        self._model = model

    def new_cache(self, rows, slots):
        return self._model.new_cache(rows, slots)

    def encode(self, *args, **kwargs):
        return self._model.encode(*args, **kwargs)

    def forward(self, cache, ids, window):
        if window.generated and ids.shape[1] == 1:
            window = dataclasses.replace(window, positions=window.positions + 1)
        return self._model.forward(cache, ids, window)


def test_contract_catches_wrong_positions():
    broken = _OffByOnePositions(sjd_batch.load_model("tiny-random"))
    with pytest.raises(AssertionError, match="stepwise vs window"):
        assert_window_matches_stepwise(broken, PROMPTS)


class _NoKvCopy:
    """A cache whose `copy_slots` does nothing: an accepted tree branch keeps the main path's KV."""

    def __init__(self, cache):
        self._cache = cache

    def __getattr__(self, name):
        return getattr(self._cache, name)

    def copy_slots(self, src, dst):
        pass


class _ForgetsKvCopies(_OffByOnePositions):
    def new_cache(self, rows, slots):
        return _NoKvCopy(self._model.new_cache(rows, slots))

    def forward(self, cache, ids, window):
        return self._model.forward(cache._cache, ids, window)


def test_contract_catches_a_missing_kv_copy():
    broken = _ForgetsKvCopies(sjd_batch.load_model("tiny-random"))
    with pytest.raises(AssertionError, match="after the KV copy"):
        assert_window_matches_stepwise(broken, PROMPTS)
