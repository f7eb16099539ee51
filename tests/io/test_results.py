"""Output layout on a local folder and on S3: keys, PNG/tar encoding, stats dataset, commit markers."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sjd_batch.decoding.state import SampleStats
from sjd_batch.io import formats, layout, results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.prompts import BadRow
from sjd_batch.io.records import STATS_SCHEMA, Provenance, StatsRecord
from sjd_batch.io.storage import Storage, StorageError

JOB = "job-abc123"
META = {"job_id": JOB, "model": "tiny-random", "method": "sjd", "config": {"window": 16}}


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3] (the inverse of `results.encode_png`)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def read_tar_shard(data: bytes) -> dict[str, dict[str, bytes]]:
    """Tar bytes -> {sample_id: {extension: bytes}}, grouping members as WebDataset does."""
    samples: dict[str, dict[str, bytes]] = {}
    for name, body in formats.read_packed("x.tar", data).items():
        key, _, ext = name.partition(".")
        samples.setdefault(key, {})[ext] = body
    return samples


def _record(shard: int, i: int, error: str | None = None, extra: dict | None = None) -> StatsRecord:
    """A stats record as the worker builds it: provenance plus the engine's `SampleStats`."""
    where = Provenance(sample_id=f"s{shard}-{i}", prompt=f"prompt {i}", negative_prompt=None, seed=1000 + i,
                       source="in.parquet", row=i, attempt=0, actor="actor-1", node="node-a",
                       model="tiny-random", method="sjd")
    if error is not None:
        return StatsRecord.failure(where, error)
    stats = SampleStats(
        tokens=6, nfe=3, ar_steps=6, accept_lens=[1, 2, 3], drafts_tested=5, drafts_accepted=3,
        accepted_by_offset=[2, 1], tested_by_offset=[3, 2], method="sjd",
        params={"window": 16, "top_k": 1}, batch_size=2, decode_s=0.5, extra=extra or {},
    )  # fmt: skip
    return StatsRecord.of(where, stats, layout.image_key(shard, where.sample_id), encode_s=0.1, upload_s=0.2,
                          latency_s=1.0)


def _write_shard(store: Storage, shard: int, n: int = 3, commit: bool = True) -> None:
    key = layout.stats_key(JOB, shard)
    results.write_stats(store, key, [_record(shard, i) for i in range(n)], META)
    if commit:
        assert results.write_commit(store, shard, {"rows": n, "stats_key": key})


def test_keys() -> None:
    assert layout.image_key(3, "abc") == "images/shard=00003/abc.png"
    assert layout.image_key(3, "abc", "webp") == "images/shard=00003/abc.webp"
    assert layout.stats_key("j", 12) == "stats/job_id=j/shard=00012/part-0.parquet"
    assert layout.errors_key("j", 12) == "errors/job_id=j/shard=00012/part-0.parquet"
    assert layout.commit_key(7) == "_commits/shard=00007.json"
    assert layout.metadata_key(3) == "images/shard=00003/metadata.jsonl"
    assert layout.pack_key(7, "webdataset") == "images/shard-00007.tar"
    assert layout.pack_key(7, "parquet") == "images/shard-00007.parquet"
    assert layout.image_ref(7, "x", "webdataset") == "images/shard-00007.tar#x.png"
    assert layout.image_ref(7, "x", "parquet") == "images/shard-00007.parquet#x.png"
    assert layout.image_ref(7, "x", "png") == layout.image_key(7, "x")
    assert layout.partial_records_key(7, 12) == "_partial/shard=00007/rows-000000000012.json"
    assert layout.partial_image_key(7, 12) == "_partial/shard=00007/row-000000000012.png"
    assert layout.failure_key(7) == "_failures/shard=00007.json"
    every_key = [layout.image_key(7, "x"), layout.pack_key(7, "webdataset"), layout.stats_key("j", 7),
                 layout.errors_key("j", 7), layout.commit_key(7), layout.partial_records_key(7, 0),
                 layout.partial_image_key(7, 0), layout.failure_key(7), layout.metadata_key(7),
                 layout.pack_key(7, "parquet")]
    assert {layout.shard_of(k) for k in every_key} == {7}  # one shard numbering everywhere
    assert layout.shard_of(layout.JOB_FILE) is None


def test_stats_record_and_schema_match_column_for_column() -> None:
    import dataclasses

    assert [f.name for f in dataclasses.fields(StatsRecord)] == STATS_SCHEMA.names
    assert {f.name for f in dataclasses.fields(Provenance)} <= set(STATS_SCHEMA.names)
    record = _record(0, 0)
    assert StatsRecord.from_json(json.loads(json.dumps(record.to_json()))) == record  # partial files


def test_encode_png_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    png = results.encode_png(pixels)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.array_equal(decode_png(png), pixels)
    assert results.encode_png(torch.from_numpy(pixels)) == png
    for bad in (pixels.astype(np.float32), pixels[..., :2], pixels[0]):
        with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
            results.encode_png(bad)


def test_stats_round_trip_with_schema_and_metadata(store: Storage) -> None:
    _write_shard(store, 0)
    _write_shard(store, 1, n=2)
    table = results.read_stats(store).sort_by("sample_id")
    assert table.schema == pa.unify_schemas([results.STATS_SCHEMA, results.PARTITION_SCHEMA])
    assert table.num_rows == 5
    first = table.to_pylist()[0]
    assert first["sample_id"] == "s0-0" and first["shard"] == 0 and first["job_id"] == JOB
    assert first["accept_lens"] == [1, 2, 3] and first["step_compression"] == 2.0
    assert first["tested_by_offset"] == [3, 2] and first["method"] == "sjd"
    assert json.loads(first["params_json"]) == {"top_k": 1, "window": 16}
    assert first["error"] is None and first["extra_json"] is None and first["latency_s"] == 1.0
    fs, root = store.arrow_filesystem()
    meta = pq.read_schema(f"{root}/{layout.stats_key(JOB, 0)}", filesystem=fs).metadata
    assert meta[b"sjd_batch.schema_version"] == b"1"
    assert meta[b"model"] == b"tiny-random" and json.loads(meta[b"config"]) == {"window": 16}
    assert (
        pq.read_metadata(f"{root}/{layout.stats_key(JOB, 0)}", filesystem=fs)
        .row_group(0)
        .column(0)
        .compression
        == "ZSTD"
    )


def test_error_rows_and_engine_extras(store: Storage) -> None:
    rows = [_record(0, 0, error="CUDA out of memory"), _record(0, 1, extra={"queue_s": 0.25})]
    results.write_stats(store, layout.stats_key(JOB, 0), rows, META)
    results.write_commit(store, 0, {"rows": 2})
    failed, ok = results.read_stats(store).sort_by("sample_id").to_pylist()
    assert failed["error"] == "CUDA out of memory" and failed["nfe"] is None and failed["accept_lens"] is None
    assert failed["image_key"] is None and failed["seed"] == 1000 and failed["model"] == "tiny-random"
    assert json.loads(ok["extra_json"]) == {"queue_s": 0.25}


def test_stats_rows_of_the_wrong_type_are_refused(store: Storage) -> None:
    with pytest.raises(ValueError, match="do not fit the stats schema"):
        bad = dataclasses.replace(_record(0, 0), nfe="many")
        results.write_stats(store, layout.stats_key(JOB, 0), [bad], META)


def test_only_committed_shards_are_read(store: Storage) -> None:
    _write_shard(store, 0)
    _write_shard(store, 1, commit=False)  # a crashed shard: stats written, no marker
    assert set(results.read_stats(store).column("shard").to_pylist()) == {0}
    assert set(results.read_stats(store, committed_only=False).column("shard").to_pylist()) == {0, 1}


def test_empty_output_reads_as_an_empty_table(store: Storage) -> None:
    table = results.read_stats(store)
    assert table.num_rows == 0 and "step_compression" in table.schema.names and "shard" in table.schema.names


def test_unknown_schema_version_is_refused(store: Storage) -> None:
    table = pa.table({"sample_id": ["a"]}).replace_schema_metadata({"sjd_batch.schema_version": "99"})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    store.write_bytes(layout.stats_key(JOB, 0), sink.getvalue())
    results.write_commit(store, 0, {"rows": 1})
    with pytest.raises(StorageError, match="schema_version '99'"):
        results.read_stats(store)


def test_commit_markers(store: Storage) -> None:
    assert results.committed_shards(store) == {}
    assert results.write_commit(store, 2, {"rows": 3, "stats_key": "s"}) is True
    assert results.write_commit(store, 2, {"rows": 999}) is False  # already committed: unchanged
    assert results.write_commit(store, 10, {"rows": 1}) is True
    done = results.committed_shards(store)
    assert sorted(done) == [2, 10]
    assert done[2] == {"rows": 3, "stats_key": "s", "shard": 2, "schema_version": "1"}


def test_corrupt_commit_marker_is_named(store: Storage) -> None:
    store.write_bytes(layout.commit_key(4), b"{not json")
    with pytest.raises(StorageError, match=r"shard=00004\.json is not valid JSON"):
        results.committed_shards(store)


def test_errors_file_round_trip(store: Storage) -> None:
    bad = [BadRow("p-00000001", "s3://b/p.parquet", 1, "prompt is null"), BadRow("x", "f", 5, "id is null")]
    results.write_errors(store, layout.errors_key(JOB, 3), bad, META)
    results.write_commit(store, 3, {"rows": 0, "errors": 2})
    table = results.read_errors(store)
    assert table.column("reason").to_pylist() == ["prompt is null", "id is null"]
    assert table.column("shard").to_pylist() == [3, 3] and table.column("row").to_pylist() == [1, 5]


def test_duckdb_and_polars_read_the_stats(store: Storage) -> None:
    for shard in range(3):
        _write_shard(store, shard, n=4)
    stats = results.stats_dataset(store)  # DuckDB finds the pyarrow dataset by its variable name
    got = duckdb.sql(
        "SELECT shard, count(*) AS n, avg(step_compression) AS c FROM stats GROUP BY shard ORDER BY 1"
    )
    assert got.fetchall() == [(0, 4, 2.0), (1, 4, 2.0), (2, 4, 2.0)]
    by_shard = pl.scan_pyarrow_dataset(stats).group_by("shard").agg(pl.len()).sort("shard").collect()
    assert by_shard.rows() == [(0, 4), (1, 4), (2, 4)]


def test_polars_and_duckdb_read_local_files_directly(tmp_path) -> None:
    store = open_storage(str(tmp_path))
    for shard in range(2):
        _write_shard(store, shard, n=3)
    pattern = f"{tmp_path}/stats/**/*.parquet"
    df = pl.scan_parquet(
        pattern, hive_partitioning=True, hive_schema={"job_id": pl.String, "shard": pl.Int32}
    )
    out = df.group_by("job_id", "shard").agg(pl.col("nfe").sum()).sort("shard").collect()
    assert out.rows() == [(JOB, 0, 9), (JOB, 1, 9)]
    # zero-padded shard=00001 folders: DuckDB needs the partition types, as Polars does
    source = f"read_parquet('{pattern}', hive_partitioning=true, hive_types={{'shard': INTEGER}})"
    rows = duckdb.sql(f"SELECT job_id, shard, count(*) FROM {source} GROUP BY ALL ORDER BY shard").fetchall()
    assert rows == [(JOB, 0, 3), (JOB, 1, 3)]
    kv = duckdb.sql(
        f"SELECT value FROM parquet_kv_metadata('{pattern}') WHERE key = 'sjd_batch.schema_version'"
    )
    assert {bytes(v) for (v,) in kv.fetchall()} == {b"1"}


@pytest.mark.s3
def test_polars_reads_the_stats_from_s3_natively(bucket, s3_endpoint) -> None:
    store = open_storage(f"s3://{bucket}/out")
    _write_shard(store, 0, n=2)
    options = {
        "aws_access_key_id": "testkey",
        "aws_secret_access_key": "testsecret",
        "aws_region": "us-east-1",
        "aws_endpoint_url": s3_endpoint,
        "aws_allow_http": "true",
    }
    hive = {"job_id": pl.String, "shard": pl.Int32}
    pattern = f"s3://{bucket}/out/stats/**/*.parquet"
    df = pl.scan_parquet(pattern, storage_options=options, hive_partitioning=True, hive_schema=hive).collect()
    assert sorted(df["sample_id"].to_list()) == ["s0-0", "s0-1"] and df["shard"].to_list() == [0, 0]


@pytest.mark.s3
def test_stats_survive_transient_s3_errors(bucket, flaky_proxy) -> None:
    proxy = flaky_proxy(fail_first=2)
    store = open_storage(f"s3://{bucket}/out", endpoint_url=proxy.url)
    _write_shard(store, 0)
    assert proxy.failed == 2
    proxy.fail_first += 2  # two more failures, now on the read path (listing, markers, pyarrow GETs)
    assert results.read_stats(store).num_rows == 3
    assert proxy.failed == 4


def test_tar_shard_is_deterministic_and_webdataset_shaped() -> None:
    png = results.encode_png(np.zeros((2, 2, 3), np.uint8))

    def build() -> bytes:
        writer = formats.TarPacker()
        for i in (2, 1):
            writer.add(dataclasses.replace(_record(0, i), sample_id=f"s-{i}"), png)
        assert len(writer) == 2
        return writer.getvalue()

    data = build()
    assert data == build()  # a retried shard rewrites identical bytes
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["s-2.png", "s-2.txt", "s-2.json", "s-1.png", "s-1.txt", "s-1.json"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    samples = read_tar_shard(data)
    assert samples["s-1"]["png"] == png and samples["s-1"]["txt"] == b"prompt 1"
    meta = json.loads(samples["s-1"]["json"])
    assert meta == {"id": "s-1", "seed": 1001, "model": "tiny-random", "method": "sjd",
                    "stats": {k: getattr(_record(0, 1), k) for k in formats.STAT_COLUMNS}}


def test_tar_shard_refuses_ambiguous_ids() -> None:
    writer = formats.TarPacker()
    writer.add(dataclasses.replace(_record(0, 0), sample_id="a"), b"x")
    for bad in ("a", "has.dot", "a/b"):
        with pytest.raises(ValueError, match="must be unique and contain no"):
            writer.add(dataclasses.replace(_record(0, 0), sample_id=bad), b"x")


def test_image_refs_round_trip() -> None:
    for fmt in ("webdataset", "parquet"):
        for sid in ("a", "a#b", "ü.x"):
            ref = layout.image_ref(3, sid, fmt)
            assert layout.split_image_ref(ref) == (layout.pack_key(3, fmt), f"{sid}.png")
    for sid in ("a", "a#b", "x.tar#y"):  # a png sample's id may hold '#': its key is not a packed reference
        assert layout.split_image_ref(layout.image_key(3, sid)) == (layout.image_key(3, sid), None)
