"""Compaction of per-shard stats: every row kept, readers see old or new files, never both or neither."""

from __future__ import annotations

import json
import threading

import polars as pl
import pyarrow.dataset as ds
import pytest

from sjd_batch.commands.bench_output import JOB_ID, duckdb_count, fabricate
from sjd_batch.commands.compact import compact_output
from sjd_batch.io import compaction, results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage


def _ids(storage: Storage) -> list[str]:
    return sorted(results.read_stats(storage).column("sample_id").to_pylist())


def _polars_count(storage: Storage) -> int:
    return pl.scan_pyarrow_dataset(results.stats_dataset(storage)).select(pl.len()).collect().item()


def test_compact_keeps_every_row_and_the_queries(store: Storage) -> None:
    fabricate(store, range(0, 40), rows=3)
    fabricate(store, range(40, 43), rows=3, committed=False)  # in flight: not part of the stats yet
    before = _ids(store)
    assert len(before) == 120 and duckdb_count(store) == 120 == _polars_count(store)
    report = compact_output(store, target_bytes=4096, grace_s=0)  # small files: several outputs
    stats = report["folders"]["stats"]
    rows = (stats["rows"], stats["before"]["rows"], stats["after"]["rows"])
    assert stats["shards"] == 40 and rows == (120, 120, 120)
    assert stats["before"]["files"] == 40 and 1 < stats["after"]["files"] < 40
    assert _ids(store) == before and duckdb_count(store) == 120 == _polars_count(store)
    table = results.read_stats(store)
    assert sorted(set(table.column("shard").to_pylist())) == list(range(40))  # shard survives as a column
    assert set(table.column("job_id").to_pylist()) == {JOB_ID}
    shard7 = results.stats_dataset(store).to_table(filter=ds.field("shard") == 7)
    assert sorted(shard7.column("sample_id").to_pylist()) == [f"s000007-{i}" for i in range(3)]
    # the merged per-shard files are gone, the uncommitted ones are untouched
    assert sorted(compaction.per_shard_keys(store, "stats")) == [40, 41, 42]


def test_shards_committed_later_and_a_second_compaction(store: Storage) -> None:
    fabricate(store, range(0, 10), rows=2)
    compact_output(store, 64 << 20, grace_s=0)
    fabricate(store, range(10, 15), rows=2)  # committed after the compaction: read from their own files
    assert len(_ids(store)) == 30 and duckdb_count(store) == 30
    second = compact_output(store, 64 << 20, grace_s=0)["folders"]["stats"]
    assert (second["generation"], second["shards"], second["after"]["files"]) == (2, 5, 2)
    manifest = compaction.latest_manifest(store, "stats")
    assert manifest.covered == ((0, 15),) and manifest.rows == 30
    assert compact_output(store, 64 << 20, grace_s=0)["folders"]["stats"]["generation"] == 0  # nothing new


def test_covered_files_are_never_read_twice_even_before_they_are_deleted(store: Storage) -> None:
    fabricate(store, range(0, 6), rows=2)
    done = threading.Event()
    seen: list[int] = []

    def log(line: str) -> None:  # called while compact waits out its grace period
        if "waiting" in line:
            seen.append(duckdb_count(store))
            seen.append(len(compaction.per_shard_keys(store, "stats")))
            done.set()

    compaction.compact(store, "stats", results.STATS_SCHEMA, {results.VERSION_KEY: b"1"}, grace_s=0.01,
                       log=log)
    assert done.is_set() and seen == [12, 6]  # new files visible, old ones still there, no double count
    assert compaction.per_shard_keys(store, "stats") == {} and duckdb_count(store) == 12


def test_a_compaction_that_loses_the_race_changes_nothing(store: Storage) -> None:
    fabricate(store, range(0, 4), rows=2)
    # another compaction published generation 1 first (here: an empty one, covering nothing)
    empty = compaction.Manifest("stats", 1, (), (), 0.0)
    store.write_bytes("stats/_manifest/00000001.json", empty.to_json())
    assert compaction.latest_manifest(store, "stats") == empty
    keys = set(store.list())
    store.delete("stats/_manifest/00000001.json")
    real_write = store.write_bytes

    def racing_write(key: str, data: bytes, if_absent: bool = False) -> bool:
        if key.endswith("00000001.json"):
            real_write(key, empty.to_json(), if_absent=True)  # the rival's manifest lands just before ours
        return real_write(key, data, if_absent)

    store.write_bytes = racing_write  # type: ignore[method-assign]
    result = compaction.compact(store, "stats", results.STATS_SCHEMA, {results.VERSION_KEY: b"1"}, grace_s=0)
    assert result.lost_race and result.generation == 0
    assert set(store.list()) == keys  # our compacted files were removed, the per-shard files kept
    assert duckdb_count(store) == 8


def test_leftovers_of_an_interrupted_compaction_are_collected(store: Storage) -> None:
    fabricate(store, range(0, 4), rows=1)
    compaction.compact(store, "stats", results.STATS_SCHEMA, {results.VERSION_KEY: b"1"}, grace_s=0)
    fabricate(store, range(0, 2), rows=1)  # as if the deletes after the flip had not happened
    store.write_bytes("stats/_compacted/g000001-deadbeef/job_id=x/part-00000.parquet", b"orphan")
    assert duckdb_count(store) == 4  # covered files are not read even though they exist
    compaction.compact(store, "stats", results.STATS_SCHEMA, {results.VERSION_KEY: b"1"}, grace_s=0)
    assert compaction.per_shard_keys(store, "stats") == {}
    assert not [k for k in store.list() if "deadbeef" in k] and duckdb_count(store) == 4


def test_manifest_round_trip_and_ranges() -> None:
    assert compaction.to_ranges([7, 1, 2, 3, 3]) == ((1, 4), (7, 8)) and compaction.to_ranges([]) == ()
    m = compaction.Manifest("stats", 3, (compaction.CompactedFile("k", 5, 10, ((0, 2),)),), ((0, 2),), 1.5)
    assert compaction.Manifest.from_json(m.to_json()) == m and json.loads(m.to_json())["generation"] == 3
    assert m.covers(1) and not m.covers(2)


@pytest.mark.parametrize("bad", [b"not json", b'{"folder": "stats"}'])
def test_a_broken_manifest_is_a_clear_error(store: Storage, bad: bytes) -> None:
    store.write_bytes("stats/_manifest/00000001.json", bad)
    with pytest.raises(Exception, match="is not a valid compaction manifest"):
        compaction.latest_manifest(store, "stats")


def test_the_run_summary_says_when_compaction_would_help(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sjd_batch import progress
    from sjd_batch.progress import JobSummary, compaction_hint

    monkeypatch.setattr(progress, "COMPACT_FROM", 20)  # 1,000 by default
    COMPACT_FROM = 20
    store = open_storage(str(tmp_path / "out"))
    fabricate(store, range(COMPACT_FROM), rows=1)
    summary = JobSummary("id", store.uri, COMPACT_FROM, shards_skipped=COMPACT_FROM - 10, shards_committed=10)
    hint = compaction_hint(store, summary)
    assert f"{COMPACT_FROM:,} per-shard files not compacted; `sjd-batch compact {store.uri}`" in hint
    summary.compaction_hint = hint
    assert hint in summary.text()
    compact_output(store, 64 << 20, grace_s=0)
    assert compaction_hint(store, summary) == ""  # compacted: nothing to say
    assert compaction_hint(store, JobSummary("id", store.uri, 10, shards_committed=10)) == ""
