"""A job's output files: image encoding, the stats and errors Parquet datasets and shard commit markers.
Their keys come from `layout`, their rows from `records`; the image formats are `formats`'.

A shard's outputs count only once its commit marker exists: `read_stats` reads committed shards only.
`job_id` and `shard` are hive partition columns: they live in the path, not in the files, so pyarrow,
DuckDB and Polars all see them with the same types (`PARTITION_SCHEMA`). Shard folders are zero-padded,
so readers that infer partition types need them spelled out: DuckDB `read_parquet(...,
hive_partitioning=true, hive_types={'shard': INTEGER})`, Polars `hive_schema={"shard": pl.Int32}`;
`stats_dataset` hands DuckDB and Polars a dataset that already has them.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sjd_batch.io import layout
from sjd_batch.io.backends import open_storage
from sjd_batch.io.records import (
    ERRORS_SCHEMA,
    PARTITION_SCHEMA,
    SCHEMA_VERSION,
    STATS_SCHEMA,
    StatsRecord,
    stats_table,
)
from sjd_batch.io.storage import Storage, StorageError

if TYPE_CHECKING:
    import pyarrow.dataset as ds

    from sjd_batch.io.prompts import BadRow

VERSION_KEY = b"sjd_batch.schema_version"


def encode_png(pixels: Any) -> bytes:
    """A uint8 [H, W, 3] image (numpy array or torch tensor, any device) -> PNG bytes."""
    import numpy as np
    from PIL import Image

    if hasattr(pixels, "detach"):  # torch, without importing it here
        pixels = pixels.detach().cpu().numpy()
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"encode_png expects a uint8 [H, W, 3] image, got {arr.dtype} {list(arr.shape)}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _file_metadata(metadata: dict[str, Any]) -> dict[bytes, bytes]:
    """Schema metadata: strings as they are, anything else as JSON, plus the schema version."""
    out = {
        str(k).encode(): (v if isinstance(v, str) else json.dumps(v, sort_keys=True)).encode()
        for k, v in metadata.items()
    }
    out[VERSION_KEY] = SCHEMA_VERSION.encode()
    return out


def _write_table(storage: Storage, key: str, table: pa.Table, metadata: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata(_file_metadata(metadata))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes(key, sink.getvalue().to_pybytes())  # atomic: a retry replaces its own file


def write_stats(storage: Storage, key: str, records: list[StatsRecord], metadata: dict[str, Any]) -> None:
    """Write one shard's stats records as zstd Parquet with STATS_SCHEMA.

    `metadata` (e.g. job_id, model, method) goes into the file's schema metadata, next to
    `sjd_batch.schema_version`.
    """
    try:
        table = stats_table(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"stats records for {storage.join(key)} do not fit the stats schema: {e}") from e
    _write_table(storage, key, table, metadata)


def write_errors(storage: Storage, key: str, bad_rows: list[BadRow], metadata: dict[str, Any]) -> None:
    """Write one shard's skipped input rows (`BadRow`s) as zstd Parquet with ERRORS_SCHEMA."""
    records = [
        {"sample_id": b.sample_id, "source": b.source, "row": b.row, "reason": b.reason} for b in bad_rows
    ]
    _write_table(storage, key, pa.Table.from_pylist(records, schema=ERRORS_SCHEMA), metadata)


def read_job_file(storage: Storage) -> dict[str, Any]:
    """The output's `job.json`; a StorageError that says so when `storage` holds no job output."""
    where = storage.join(layout.JOB_FILE)
    if not storage.exists(layout.JOB_FILE):
        raise StorageError(f"{where} does not exist: {storage.uri} is not a job output")
    try:
        return json.loads(storage.read_bytes(layout.JOB_FILE))
    except json.JSONDecodeError as e:
        raise StorageError(f"{where} is not valid JSON: {e}") from e


def write_commit(storage: Storage, shard: int, info: dict[str, Any]) -> bool:
    """Write a shard's commit marker, create-only; call it after every other output of the shard.

    `info` should hold at least the row counts and `stats_key`. Returns False if the shard was already
    committed (the existing marker is left unchanged).
    """
    body = {**info, "shard": shard, "schema_version": SCHEMA_VERSION}
    key = layout.commit_key(shard)
    return storage.write_bytes(key, json.dumps(body, sort_keys=True).encode(), if_absent=True)


def committed_shards(storage: Storage) -> dict[int, dict[str, Any]]:
    """Shard number -> its commit marker's content, for every committed shard."""
    keys = [k for k in storage.list(layout.COMMITS) if layout.shard_of(k) is not None and k.endswith(".json")]

    def load(key: str) -> tuple[int, dict[str, Any]]:
        try:
            return layout.shard_of(key), json.loads(storage.read_bytes(key))
        except json.JSONDecodeError as e:
            raise StorageError(f"commit marker {storage.join(key)} is not valid JSON: {e}") from e

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(keys)))) as pool:
        return dict(pool.map(load, keys))


def stats_dataset(output: Storage | str, committed_only: bool = True) -> ds.Dataset:
    """The stats as a `pyarrow.dataset` (hive partitions `job_id`, `shard`), for DuckDB/Polars/Arrow.

    `output`: the job's output URI (a local folder, `s3://bucket/prefix`) or its `Storage`."""
    return _dataset(_storage(output), layout.STATS, STATS_SCHEMA, committed_only)


def read_stats(output: Storage | str, committed_only: bool = True) -> pa.Table:
    """All stats rows of committed shards (or of every shard written, with `committed_only=False`) of the
    output at `output` (a URI or a `Storage`)."""
    return stats_dataset(output, committed_only).to_table()


def read_errors(output: Storage | str, committed_only: bool = True) -> pa.Table:
    """All skipped input rows of committed shards, with their `job_id` and `shard`."""
    return _dataset(_storage(output), layout.ERRORS, ERRORS_SCHEMA, committed_only).to_table()


def _storage(output: Storage | str) -> Storage:
    # A URI as the user would write it; open_storage refuses one that carries credentials.
    return output if isinstance(output, Storage) else open_storage(output)


def _dataset(storage: Storage, folder: str, schema: pa.Schema, committed_only: bool) -> ds.Dataset:
    import pyarrow.dataset as ds

    from sjd_batch.io import compaction

    # The latest compaction's files plus the per-shard files it does not cover (see io/compaction.py)
    committed = compaction.committed_indices(storage) if committed_only else None
    keys = compaction.current_keys(storage, folder.rstrip("/"), committed)
    fs, root = storage.arrow_filesystem()
    full_schema = pa.unify_schemas([schema, PARTITION_SCHEMA])
    partitioning = ds.partitioning(PARTITION_SCHEMA, flavor="hive")
    dataset = ds.dataset(
        [f"{root}/{k}" for k in keys],
        schema=full_schema,
        filesystem=fs,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=f"{root}/{folder.rstrip('/')}",
    )
    for fragment in dataset.get_fragments():
        _check_version(fragment.path, fragment.physical_schema)
    return dataset


def _check_version(path: str, schema: pa.Schema) -> None:
    version = (schema.metadata or {}).get(VERSION_KEY, b"").decode()
    if version != SCHEMA_VERSION:
        raise StorageError(
            f"{path} has sjd_batch.schema_version {version or '(none)'!r}; this sjd-batch reads "
            f"version {SCHEMA_VERSION!r} only"
        )
