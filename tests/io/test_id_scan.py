"""Sample id rules and the bounded-memory duplicate-id scan (local folder and S3)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sjd_batch.io import id_scan
from sjd_batch.io.id_scan import scan_ids
from sjd_batch.io.ids import Hasher, IdRules, column_ids, id_problem, id_text
from sjd_batch.io.prompts import plan_inputs
from sjd_batch.io.storage import Storage
from tests.io.conftest import put_parquet

TRICKY = ["ok", "", " ", "  \t", "\u3000", ".", "..", "...", "a.b", "a/b", "a\\b", "a\x01b", "\x7f",
          "é" * 100, "é" * 100 + "x", "x" * 200, "x" * 201, "猫", "-", "a b", " a", "\u00a0", None]


@pytest.mark.parametrize("fmt", ["png", "webdataset"])
def test_column_check_never_drops_an_id_the_row_check_accepts(fmt: str) -> None:
    """The scan may only skip ids that `read_shard` skips too, or it could miss a duplicate."""
    rules = IdRules.for_format(fmt)
    ids, mask = column_ids(pa.array(TRICKY), rules)
    row_ok = [v is not None and id_problem(v, rules) is None for v in TRICKY]
    assert all(m for m, ok in zip(mask, row_ok, strict=True) if ok)
    assert [v.as_py() for v in ids] == [None if v is None else v.encode() for v in TRICKY]
    # and it is not vacuous: it does drop what is surely bad
    assert sum(not m for m in mask) >= 10 and mask.tolist() != [True] * len(TRICKY)


def test_column_ids_of_other_types_match_the_row_rule() -> None:
    for column in (pa.array([1, -2, None]), pa.array([1.5, 2.0]), pa.array([True, False]),
                   pa.array(["a", "b", "a"]).dictionary_encode(), pa.array([b"ok", b"\xff"], pa.binary())):
        ids, mask = column_ids(column, IdRules())
        texts = [id_text(v)[0] for v in column.to_pylist()]
        assert [v.as_py() for v in ids] == [None if t is None else t.encode() for t in texts]
        assert mask.tolist() == [t is not None and id_problem(t, IdRules()) is None for t in texts]


def test_digests_equal_exactly_for_equal_ids_and_do_not_depend_on_chunking() -> None:
    hasher = Hasher(seed=12345)
    values = [f"id-{i}".encode() for i in range(50_000)] + [b"", b"id-7", b"x" * 5000]
    data = pa.array(values, pa.large_binary())
    d = hasher.digests(data)
    assert d[50_001] == d[7] and len(np.unique(d[:50_000])) == 50_000
    assert (hasher.digests(data, chunk_bytes=97) == d).all()
    assert (hasher.digests(data.slice(11, 400)) == d[11:411]).all()
    assert (Hasher(seed=99).digests(data)[:100] != d[:100]).all()  # the base changes every digest


def _with_ids(ids: list) -> pa.Table:
    return pa.table({"id": ids, "prompt": ["p"] * len(ids)})


def _files(store: Storage) -> list[str]:
    a = put_parquet(store, "in/a.parquet", _with_ids(["x", "y", None, "gen-00000001"]))
    b = put_parquet(store, "in/b.parquet", _with_ids(["z", "y", "x", "a/b"]), row_group_size=2)
    c = put_parquet(store, "in/gen.parquet", pa.table({"prompt": ["p"] * 3}))  # ids gen-00000000...
    return [a, b, c]


@pytest.mark.parametrize("memory_bytes", [1 << 20, 48])  # one partition; several spill files
def test_duplicates_across_files_and_against_generated_ids(store: Storage, memory_bytes: int) -> None:
    plan = plan_inputs(_files(store), shard_size=2)
    scan = scan_ids(plan, IdRules(), memory_bytes=memory_bytes)
    assert scan.ids == 9 and scan.unusable == 2  # a null and 'a/b' are skipped rows, not ids
    assert (scan.partitions > 1) == (memory_bytes < 1000)
    found = {d.sample_id: d for d in scan.duplicates}
    assert set(found) == {"x", "y", "gen-00000001"}
    gen = found["gen-00000001"]
    assert (gen.first.row, gen.first.generated, gen.again.row, gen.again.generated) == (3, False, 1, True)
    assert "(generated: that file has no `id` column)" in gen.describe()
    assert (found["x"].first.uri, found["x"].again.uri, found["x"].again.row) == (plan.files[0].uri,
                                                                                   plan.files[1].uri, 2)
    assert len(scan_ids(plan, IdRules(), limit=1).duplicates) == 1


def test_repeats_inside_one_shard_are_left_to_read_shard(store: Storage) -> None:
    a = put_parquet(store, "in/a.parquet", _with_ids(["x", "x", "y", "z"]))
    assert scan_ids(plan_inputs([a], shard_size=2), IdRules()).duplicates == []
    assert [d.sample_id for d in scan_ids(plan_inputs([a], shard_size=1), IdRules()).duplicates] == ["x"]


def test_no_duplicates_and_generated_only(store: Storage) -> None:
    a = put_parquet(store, "in/a.parquet", _with_ids([f"s{i}" for i in range(1000)]))
    g = put_parquet(store, "in/g.parquet", pa.table({"prompt": ["p"] * 10}))
    scan = scan_ids(plan_inputs([a, g], 7), IdRules(), memory_bytes=4096)
    assert scan.duplicates == [] and scan.ids == 1010 and scan.partitions == 4
    only_generated = scan_ids(plan_inputs([g], 7), IdRules())
    assert only_generated.ids == 0 and only_generated.partitions == 0  # unique by construction


def test_digest_collisions_are_not_duplicates(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal digests are only candidates: every id hashing alike must still give no false report,
    and real duplicates among them are still found (the exact comparison decides)."""
    monkeypatch.setattr(Hasher, "digests", lambda self, data, chunk_bytes=0: np.zeros(len(data), np.uint64))
    a = put_parquet(store, "in/a.parquet", _with_ids([f"s{i}" for i in range(20)]))
    assert scan_ids(plan_inputs([a], 3), IdRules()).duplicates == []
    b = put_parquet(store, "in/b.parquet", _with_ids(["s5", "t"]))
    [dup] = scan_ids(plan_inputs([a, b], 3), IdRules()).duplicates
    assert dup.sample_id == "s5" and (dup.first.row, dup.again.row) == (5, 0)


def test_scan_reads_ids_in_batches(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(id_scan, "BATCH_ROWS", 7)
    ids = [f"s{i}" for i in range(100)] + ["s3"]
    a = put_parquet(store, "in/a.parquet", _with_ids(ids), row_group_size=16)
    g = put_parquet(store, "in/g.parquet", pa.table({"prompt": ["p"] * 20}))
    scan = scan_ids(plan_inputs([a, g], 10), IdRules(), memory_bytes=256)
    assert scan.ids == 121 and [(d.sample_id, d.first.row, d.again.row) for d in scan.duplicates] == [
        ("s3", 3, 100)]
