"""`fetch_model`: an s3:// model folder comes down streamed, in parallel ranged parts, through faults."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from sjd_batch.io import storage_s3
from sjd_batch.io.backends import open_storage
from sjd_batch.io.model_cache import fetch_model
from sjd_batch.io.storage import StorageError

PART = 1024 * 1024


@pytest.fixture
def model(bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, bytes]:
    """A model prefix with one 12 MiB file and two small ones; parts of 1 MiB; a fresh cache."""
    files = {"model.safetensors": os.urandom(12 * PART), "config.json": b"{}", "sub/vocab.txt": b"a\nb\n"}
    store = open_storage(f"s3://{bucket}/models/m")
    for key, data in files.items():
        store.write_bytes(key, data)
    monkeypatch.setattr(storage_s3, "DOWNLOAD_PART", PART)
    monkeypatch.setenv("SJD_BATCH_CACHE", str(tmp_path / "cache"))
    return files


@pytest.mark.s3
def test_large_files_come_in_parallel_ranged_parts(bucket: str, model: dict[str, bytes], flaky_proxy,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = flaky_proxy(fail_first=0)
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    folder = fetch_model(f"s3://{bucket}/models/m")
    for key, data in model.items():
        assert (folder / key).read_bytes() == data
    gets = [p for m, p, _ in proxy.log if m == "GET" and p.endswith("model.safetensors")]
    assert len(gets) == 12  # one ranged GET per 1 MiB part (it was one GET of the whole file)


@pytest.mark.s3
def test_files_are_streamed_not_held_in_memory(bucket: str, model: dict[str, bytes]) -> None:
    """Straight to the server (the test proxy buffers whole answers): Python's peak allocation while
    fetching a 12 MiB file stays well below the file (reading it whole, as before, needs all of it)."""
    tracemalloc.start()
    try:
        folder = fetch_model(f"s3://{bucket}/models/m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (folder / "model.safetensors").read_bytes() == model["model.safetensors"]
    assert peak < 7 * PART, f"{peak / PART:.1f} MiB held in memory for a 12 MiB file"


@pytest.mark.s3
def test_broken_bodies_and_5xx_are_survived(bucket: str, model: dict[str, bytes], flaky_proxy,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for kwargs in ({"truncate": True, "methods": ("GET",)}, {"methods": ("GET", "HEAD")}):
        monkeypatch.setenv("SJD_BATCH_CACHE", str(Path(os.environ["SJD_BATCH_CACHE"]) / str(len(kwargs))))
        proxy = flaky_proxy(fail_first=3, **kwargs)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        folder = fetch_model(f"s3://{bucket}/models/m")
        assert proxy.failed == 3
        assert all((folder / k).read_bytes() == v for k, v in model.items())


@pytest.mark.s3
def test_a_missing_prefix_is_named(bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"model s3://{bucket}/nothing: no objects"):
        fetch_model(f"s3://{bucket}/nothing", root=tmp_path)


def test_a_local_prefix_is_copied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"x" * 1000)
    (src / "sub" / "b.txt").write_bytes(b"y")
    folder = fetch_model(str(src), root=tmp_path / "cache")
    assert (folder / "a.bin").read_bytes() == b"x" * 1000 and (folder / "sub" / "b.txt").read_bytes() == b"y"
    assert not list((tmp_path / "cache" / "models").glob("*.tmp"))
