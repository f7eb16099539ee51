"""The three image formats of a job's output, and what each stores beside its images so that the output
loads straight into a training pipeline (keys: `layout`; rows: `records`):

- `png`: one PNG per sample (`images/shard=00003/<id>.png`) plus, per shard folder, `metadata.jsonl`:
  one line per image with `file_name`, `text` (the prompt) and the sample's id, seed, model, method and
  statistics. `datasets.load_dataset("imagefolder", data_dir="<output>/images")` reads it as a captioned
  dataset: with metadata files present, `datasets` takes its rows from them (no label column made of
  the `shard=` folder names), so the images of a shard without its metadata file are not part of it.
- `webdataset`: one tar per shard (`images/shard-00003.tar`); each sample is `<id>.png`, `<id>.txt`
  (the prompt, UTF-8) and `<id>.json` (id, seed, model, method, and the statistics under `stats`).
  WebDataset groups members by the name up to the first dot, so ids hold no dot in this format.
- `parquet`: one Parquet file per shard (`images/shard-00003.parquet`), one row per image: `image` as
  `{bytes, path}` (the PNG's bytes; what img2dataset's parquet output and `datasets`' `Image` feature
  store), `text`, and the same columns as `metadata.jsonl`. The file's `huggingface` schema metadata
  declares `image` an Image feature, so `datasets` decodes it to a PIL image; Polars reads a struct.

Each shard's metadata file, tar or Parquet file is written when the shard commits, after its images
and before its commit marker: it lists exactly the samples that the shard's stats rows give an image.
Only what the job produces goes in (ids, seeds, prompts, acceptance statistics), never timings or
placement, so a retried shard writes the same bytes; timings stay in the stats dataset.
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any, Protocol

import pyarrow as pa

from sjd_batch.io import layout
from sjd_batch.io.records import STATS_SCHEMA, StatsRecord

FORMATS = ("png", "webdataset", "parquet")
PACKED = ("webdataset", "parquet")  # one object per shard, packed from the staged PNGs at commit

# The statistics every format carries (README "Statistics"): deterministic, unlike the timings.
STAT_COLUMNS = ("tokens", "nfe", "ar_steps", "step_compression", "accept_len_mean", "drafts_tested",
                "drafts_accepted", "acceptance_rate", "accept_lens", "accepted_by_offset", "tested_by_offset")
_ROW_GROUP = 100  # images per Parquet row group: what `datasets` writes for image datasets


def sample_fields(record: StatsRecord) -> dict[str, Any]:
    """A produced sample's fields in the dataset formats (beside its image and caption)."""
    return {"sample_id": record.sample_id, "seed": record.seed, "model": record.model,
            "method": record.method, **{name: getattr(record, name) for name in STAT_COLUMNS}}


def metadata_jsonl(records: list[StatsRecord]) -> bytes:
    """A png shard's `metadata.jsonl`: one line per sample with an image, in the records' order."""
    lines = [json.dumps({"file_name": layout.image_name(r.sample_id), "text": r.prompt, **sample_fields(r)},
                        ensure_ascii=False) for r in records if r.image_key is not None]
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


class Packer(Protocol):
    """Builds one packed shard object (tar or Parquet) from its samples, in the order added."""

    def add(self, record: StatsRecord, png: bytes) -> None: ...

    def getvalue(self) -> bytes: ...


def packer(fmt: str) -> Packer:
    """The packer of a packed format (`PACKED`)."""
    if fmt == "webdataset":
        return TarPacker()
    if fmt == "parquet":
        return ParquetPacker()
    raise ValueError(f"image format {fmt!r} is not packed (packed formats: {', '.join(PACKED)})")


class TarPacker:
    """A WebDataset tar in memory: `<id>.png`, `<id>.txt`, `<id>.json` per sample.

    Members get fixed owner, mode and mtime, so the same samples always give the same bytes (a retried
    shard rewrites an identical object).
    """

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._tar = tarfile.open(fileobj=self._buf, mode="w", format=tarfile.PAX_FORMAT)
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, record: StatsRecord, png: bytes) -> None:
        sid = record.sample_id
        if "." in sid or "/" in sid or sid in self._ids:
            raise ValueError(f"tar sample id {sid!r} must be unique and contain no '.' or '/'")
        self._ids.add(sid)
        fields = sample_fields(record)
        meta = {"id": sid, **{k: fields.pop(k) for k in ("seed", "model", "method")},
                "stats": {k: fields[k] for k in STAT_COLUMNS}}
        self._member(layout.tar_member(sid, "png"), png)
        self._member(layout.tar_member(sid, "txt"), record.prompt.encode("utf-8"))
        self._member(layout.tar_member(sid, "json"), json.dumps(meta, sort_keys=True).encode())

    def _member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def getvalue(self) -> bytes:
        """The finished tar's bytes (closes the writer)."""
        if not self._tar.closed:
            self._tar.close()
        return self._buf.getvalue()


IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # `datasets`' Image storage
PARQUET_SCHEMA = pa.schema(
    [("image", IMAGE_TYPE), ("text", pa.string()),
     *(STATS_SCHEMA.field(n) for n in ("sample_id", "seed", "model", "method", *STAT_COLUMNS))]
).with_metadata({b"huggingface": json.dumps({"info": {"features": {"image": {"_type": "Image"}}}}).encode()})


class ParquetPacker:
    """A shard's Parquet image file in memory (`PARQUET_SCHEMA`), row groups of `_ROW_GROUP` images."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def add(self, record: StatsRecord, png: bytes) -> None:
        self._rows.append({"image": {"bytes": png, "path": layout.image_name(record.sample_id)},
                           "text": record.prompt, **sample_fields(record)})

    def getvalue(self) -> bytes:
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(self._rows, schema=PARQUET_SCHEMA), sink, compression="zstd",
                       row_group_size=_ROW_GROUP)
        return sink.getvalue().to_pybytes()


def read_packed(key: str, data: bytes) -> dict[str, bytes]:
    """A packed shard object's members by name: a tar's members, or a Parquet file's images by their
    `path` (`<id>.png`): what `layout.split_image_ref` gives as the member of a stats `image_key`."""
    if key.endswith(".parquet"):
        import pyarrow.parquet as pq

        images = pq.read_table(io.BytesIO(data), columns=["image"]).column("image").to_pylist()
        return {image["path"]: image["bytes"] for image in images}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
