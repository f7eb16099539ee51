"""The three image formats load straight into training pipelines, with the packages people use
(`sjd_batch/io/formats.py`):

- `webdataset`: one tar per shard, each sample `<id>.png` + `<id>.txt` (the prompt) + `<id>.json` (id,
  seed, model, method and the sample's statistics), read with `webdataset.WebDataset`;
- `png`: one PNG per sample plus a `metadata.jsonl` per shard folder (`file_name`, `text`, statistics),
  read with `datasets.load_dataset("imagefolder")` as a captioned dataset: no label column made of the
  `shard=` folder names, and a shard that did not commit is not part of it;
- `parquet`: one Parquet file per shard, images as PNG bytes (`image`: {bytes, path}, as `datasets`
  stores an Image feature) next to `text` and the statistics, read by `datasets` and by Polars directly.

Each is a real job's output (tiny-random, two shards), checked against the stats dataset, and every
format stores the same PNG bytes; a shard interrupted and resumed writes a byte-identical tar or
Parquet file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from sjd_batch.config import IMAGE_FORMATS
from sjd_batch.driver import run_local
from sjd_batch.io import formats, layout, results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage_local import LocalStorage
from sjd_batch.job import prepare_job
from tests.test_worker import make_job, new_worker, write_prompts

# commas, quotes, a newline and non-ASCII text survive every format
PROMPTS = [f'a small shape "number {i}", with a comma,\nand ünïcode ✓' for i in range(5)]
STAT_FIELDS = ("step_compression", "acceptance_rate", "nfe", "tokens", "accept_lens", "tested_by_offset")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> str:
    table = pa.table({"id": [f"s{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS})
    return write_prompts(tmp_path_factory.mktemp("in") / "p.parquet", table)


@pytest.fixture(scope="module")
def outputs(prompts: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    out = {}
    for fmt in formats.FORMATS:
        config = make_job([prompts], str(root / fmt), input={"shard_size": 3}, output={"image_format": fmt})
        assert run_local(config, progress=False).ok
        out[fmt] = root / fmt
    return out


def stats_by_id(root: Path) -> dict[str, dict]:
    return {r["sample_id"]: r for r in results.read_stats(open_storage(str(root))).to_pylist()}


def png_digests(root: Path) -> dict[str, str]:
    """sample id -> sha256 of its PNG in the png-format output (all three formats store the same bytes)."""
    stats = stats_by_id(root)
    return {sid: hashlib.sha256((root / r["image_key"]).read_bytes()).hexdigest() for sid, r in stats.items()}


def test_the_config_offers_every_format() -> None:
    assert IMAGE_FORMATS == formats.FORMATS


def test_webdataset_samples_carry_png_txt_and_json(outputs: dict[str, Path]) -> None:
    import webdataset as wds

    stats = stats_by_id(outputs["webdataset"])
    digests = png_digests(outputs["png"])
    tars = sorted(str(p) for p in (outputs["webdataset"] / "images").glob("*.tar"))
    assert [Path(t).name for t in tars] == ["shard-00000.tar", "shard-00001.tar"]
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert sorted(s["__key__"] for s in samples) == sorted(stats) and len(samples) == len(PROMPTS)
    for s in samples:
        sid = s["__key__"]
        assert {"png", "txt", "json"} <= set(s), set(s)
        assert s["txt"].decode("utf-8") == stats[sid]["prompt"]
        meta = json.loads(s["json"])
        assert meta["id"] == sid and meta["seed"] == stats[sid]["seed"] and meta["method"] == "sjd"
        assert meta["model"] == "tiny-random"
        for name in STAT_FIELDS:
            assert meta["stats"][name] == pytest.approx(stats[sid][name]), name
        assert hashlib.sha256(s["png"]).hexdigest() == digests[sid]
    braced = f"{outputs['webdataset']}/images/shard-{{00000..00001}}.tar"  # as the README loads them
    loader = wds.WebDataset(braced, shardshuffle=False, empty_check=False).decode("pil")
    loader = loader.to_tuple("png", "txt")
    decoded = list(loader)
    assert len(decoded) == len(PROMPTS)
    assert all(isinstance(img, Image.Image) and img.mode == "RGB" and txt in PROMPTS for img, txt in decoded)


def load_imagefolder(root: Path, cache: Path):  # -> datasets.Dataset
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(root / "images"), split="train",
                                 cache_dir=str(cache))


def test_png_output_is_a_captioned_imagefolder(outputs: dict[str, Path], tmp_path: Path) -> None:
    root = outputs["png"]
    stats = stats_by_id(root)
    folders = sorted((root / "images").iterdir())
    assert [f.name for f in folders] == ["shard=00000", "shard=00001"]
    for folder in folders:
        lines = [json.loads(line) for line in (folder / "metadata.jsonl").read_text("utf-8").splitlines()]
        assert sorted(f"{line['sample_id']}.png" for line in lines) == sorted(
            p.name for p in folder.glob("*.png"))
        assert all(line["file_name"] == f"{line['sample_id']}.png" for line in lines)
    ds = load_imagefolder(root, tmp_path / "hf")
    assert "label" not in ds.column_names and "shard" not in ds.column_names  # no folder-name labels
    assert {"image", "text", "sample_id", "seed", "method", *STAT_FIELDS} <= set(ds.column_names)
    assert ds.num_rows == len(stats)
    for row in ds:
        expected = stats[row["sample_id"]]
        assert row["text"] == expected["prompt"] and row["seed"] == expected["seed"]
        assert row["step_compression"] == pytest.approx(expected["step_compression"])
        assert row["accept_lens"] == expected["accept_lens"]
        with Image.open(root / expected["image_key"]) as stored:
            assert row["image"].convert("RGB").tobytes() == stored.convert("RGB").tobytes()


def test_parquet_output_reads_in_datasets_and_polars(outputs: dict[str, Path], tmp_path: Path) -> None:
    import datasets
    import polars as pl

    root = outputs["parquet"]
    stats = stats_by_id(root)
    digests = png_digests(outputs["png"])
    files = sorted(str(p) for p in (root / "images").glob("*.parquet"))
    assert [Path(f).name for f in files] == ["shard-00000.parquet", "shard-00001.parquet"]
    frame = pl.read_parquet(files)
    assert frame.height == len(stats) and {"image", "text", "sample_id", *STAT_FIELDS} <= set(frame.columns)
    for row in frame.iter_rows(named=True):
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == digests[row["sample_id"]]
        assert row["image"]["path"] == f"{row['sample_id']}.png"
        assert row["text"] == stats[row["sample_id"]]["prompt"]
        assert row["step_compression"] == pytest.approx(stats[row["sample_id"]]["step_compression"])
    ds = datasets.load_dataset("parquet", data_dir=str(root / "images"), split="train",
                               cache_dir=str(tmp_path / "hf"))
    assert isinstance(ds.features["image"], datasets.Image)  # decoded as an image, not a struct
    assert ds.num_rows == len(stats)
    for row in ds:
        assert isinstance(row["image"], Image.Image) and row["image"].mode == "RGB"
        assert row["text"] == stats[row["sample_id"]]["prompt"]
        assert row["nfe"] == stats[row["sample_id"]]["nfe"]


class FailAfter(LocalStorage):
    """A real local folder whose writes under `prefix` fail after `limit` of them: a worker killed
    mid-shard."""

    def __init__(self, root: str, prefix: str, limit: int) -> None:
        super().__init__(root)
        self.prefix, self.limit = prefix, limit

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        if key.startswith(self.prefix):
            self.limit -= 1
            if self.limit < 0:
                raise OSError("simulated crash")
        return super().write_bytes(key, data, if_absent)


def test_imagefolder_shows_committed_shards_only(prompts: str, tmp_path: Path) -> None:
    """Shard 1 dies after two of its images (no metadata.jsonl, no marker): the imagefolder dataset
    and the stats both hold shard 0's samples only; its rerun completes both."""
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 3})
    shards = prepare_job(config).plan
    worker = new_worker(config)
    assert worker.run_shard(shards[0]).committed
    worker.storage = FailAfter(config.output.uri, layout.IMAGES, limit=1)
    with pytest.raises(OSError, match="simulated crash"):
        worker.run_shard(shards[1])
    out = Path(config.output.uri)
    assert len(list((out / "images" / "shard=00001").glob("*.png"))) == 1  # an uncommitted image
    ds = load_imagefolder(out, tmp_path / "hf1")
    assert sorted(ds["sample_id"]) == sorted(stats_by_id(out)) == ["s0", "s1", "s2"]
    assert run_local(config, progress=False).ok
    assert sorted(load_imagefolder(out, tmp_path / "hf2")["sample_id"]) == [f"s{i}" for i in range(5)]


@pytest.mark.parametrize("fmt", formats.PACKED)
def test_a_resumed_shard_packs_identical_bytes(fmt: str, prompts: str, outputs: dict[str, Path],
                                               tmp_path: Path) -> None:
    """Shard 0 dies after two staged PNGs; resumed (other batches, a later attempt), its tar or Parquet
    file is byte-identical to the uninterrupted run's: no timing or placement is packed."""
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 3}, output={"image_format": fmt},
                      run={"batch_size": 1})
    shards = prepare_job(config).plan
    worker = new_worker(config)
    worker.storage = FailAfter(config.output.uri, layout.PARTIAL, limit=3)  # 2 PNGs + their group record
    with pytest.raises(OSError, match="simulated crash"):
        worker.run_shard(shards[0])
    worker.storage = open_storage(config.output.uri)
    report = worker.run_shard(shards[0], attempt=1)
    assert report.committed and 1 <= report.resumed < 3 and report.resumed + report.generated == 3
    key = layout.pack_key(0, fmt)
    assert (Path(config.output.uri) / key).read_bytes() == (outputs[fmt] / key).read_bytes()
