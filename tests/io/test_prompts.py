"""Parquet prompt inputs on a local folder and on S3: discovery, shard plans, validation, bad input."""

from __future__ import annotations

import pyarrow as pa
import pytest

from sjd_batch.io.backends import open_storage
from sjd_batch.io.prompts import (
    BadRow,
    InputError,
    PromptRow,
    ShardSpec,
    expand_inputs,
    file_stem,
    plan_inputs,
    read_shard,
)
from sjd_batch.io.storage import Storage, StorageError
from tests.io.conftest import put_parquet


def _prompts(n: int, start: int = 0) -> pa.Table:
    return pa.table({"prompt": [f"a photo of cat {i}" for i in range(start, start + n)]})


def _reasons(rows: list) -> dict[str, str]:
    return {r.sample_id: r.reason for r in rows if isinstance(r, BadRow)}


def test_expand_inputs_finds_parquet_files_sorted(store: Storage) -> None:
    for key in ["in/b.parquet", "in/a.parquet", "in/sub/c.parquet"]:
        put_parquet(store, key, _prompts(2))
    for key in ["in/_SUCCESS", "in/notes.txt", "in/_tmp/x.parquet", "in/.hidden.parquet"]:
        store.write_bytes(key, b"ignored")
    expected = [store.join(k) for k in ["in/a.parquet", "in/b.parquet", "in/sub/c.parquet"]]
    assert expand_inputs([store.join("in")]) == expected
    assert expand_inputs([store.join("in/")]) == expected
    # files and prefixes mix, and overlaps are counted once
    assert expand_inputs([store.join("in/b.parquet"), store.join("in")]) == expected
    assert expand_inputs([store.join("in/sub/c.parquet")]) == [store.join("in/sub/c.parquet")]


def test_expand_inputs_errors(store: Storage) -> None:
    store.write_bytes("empty/readme.txt", b"no parquet here")
    with pytest.raises(InputError, match=r"no Parquet files found at .*empty"):
        expand_inputs([store.join("empty")])
    with pytest.raises(InputError, match="no Parquet files found"):
        expand_inputs([store.join("does/not/exist")])
    with pytest.raises(InputError, match="no input"):
        expand_inputs([])


def test_expand_inputs_resolves_relative_local_paths(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    put_parquet(open_storage("data"), "p.parquet", _prompts(1))
    absolute = str(tmp_path / "data" / "p.parquet")
    assert expand_inputs(["data/p.parquet"]) == expand_inputs(["data"]) == [absolute]
    assert expand_inputs([f"file://{tmp_path}/data/"]) == [absolute]


@pytest.mark.s3
def test_expand_inputs_nonexistent_bucket(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-sjd' does not exist"):
        expand_inputs(["s3://no-such-bucket-sjd/prompts/"])


def plan_shards(files: list[str], shard_size: int) -> list[ShardSpec]:
    """Every shard of a plan, as a list (small inputs only)."""
    return list(plan_inputs(files, shard_size))


def test_plan_shards_is_deterministic_and_covers_every_row(store: Storage) -> None:
    a = put_parquet(store, "in/a.parquet", _prompts(10), row_group_size=3)
    b = put_parquet(store, "in/b.parquet", _prompts(4))
    put_parquet(store, "in/c.parquet", _prompts(0))  # an empty file adds no shard
    files = expand_inputs([store.join("in")])
    plan = plan_shards(files, shard_size=4)
    assert plan == [
        ShardSpec(0, a, 0, 4),
        ShardSpec(1, a, 4, 8),
        ShardSpec(2, a, 8, 10),
        ShardSpec(3, b, 0, 4),
    ]
    assert plan_shards(expand_inputs([store.join("in/b.parquet"), store.join("in")]), 4) == plan
    assert sum(s.num_rows for s in plan) == 14
    assert [s.index for s in plan_shards(files, 100)] == [0, 1]
    with pytest.raises(ValueError, match="shard_size"):
        plan_shards(files, 0)


def test_plan_shards_refuses_colliding_generated_ids(store: Storage) -> None:
    x = put_parquet(store, "x/part-0.parquet", _prompts(1))
    y = put_parquet(store, "y/part-0.parquet", _prompts(1))
    with pytest.raises(InputError, match="part-0.*no `id` column"):
        plan_shards([x, y], 10)
    with_ids = pa.table({"id": ["u1"], "prompt": ["p"]})
    y = put_parquet(store, "y/part-0.parquet", with_ids)
    assert len(plan_shards([x, y], 10)) == 2  # an `id` column makes the stems irrelevant


def test_read_shard_valid_rows_with_all_columns(store: Storage) -> None:
    table = pa.table(
        {
            "id": ["s1", "s2", "s3"],
            "prompt": ["a red fox", "a blue whale", "ünïcødé 猫"],
            "seed": pa.array([7, None, -3], pa.int32()),
            "negative_prompt": ["blurry", None, ""],
            "extra": [1, 2, 3],  # ignored
        }
    )
    uri = put_parquet(store, "in/p.parquet", table)
    rows = read_shard(ShardSpec(0, uri, 0, 3))
    assert rows == [
        PromptRow("s1", "a red fox", 7, "blurry", uri, 0),
        PromptRow("s2", "a blue whale", None, None, uri, 1),
        PromptRow("s3", "ünïcødé 猫", -3, None, uri, 2),
    ]


def test_read_shard_generated_ids_and_row_ranges_across_row_groups(store: Storage) -> None:
    uri = put_parquet(store, "in/prompts-v1.parquet", _prompts(25), row_group_size=4)
    rows = read_shard(ShardSpec(3, uri, 9, 18))
    assert [r.row for r in rows] == list(range(9, 18))
    assert rows[0].sample_id == "prompts-v1-00000009" and rows[0].prompt == "a photo of cat 9"
    assert rows[-1].sample_id == "prompts-v1-00000017"
    assert file_stem(uri) == "prompts-v1"
    # all shards of a plan together give every row exactly once
    plan = plan_shards([uri], 7)
    assert [r.row for s in plan for r in read_shard(s)] == list(range(25))


def test_bad_prompts_become_bad_rows_with_reasons(store: Storage) -> None:
    prompts = pa.array([b"fine", None, b"", b"  \t\n", b"\xff\xfe bad", b"ok \xc3\xa9"], pa.binary())
    uri = put_parquet(store, "in/bad.parquet", pa.table({"prompt": prompts}))
    rows = read_shard(ShardSpec(0, uri, 0, 6))
    assert [type(r).__name__ for r in rows] == [
        "PromptRow",
        "BadRow",
        "BadRow",
        "BadRow",
        "BadRow",
        "PromptRow",
    ]
    assert _reasons(rows) == {
        "bad-00000001": "prompt is null",
        "bad-00000002": "prompt is empty",
        "bad-00000003": "prompt is blank (whitespace only)",
        "bad-00000004": "prompt is not valid UTF-8 (byte 0xff at offset 0)",
    }
    assert rows[5].prompt == "ok é"
    assert all(r.source == uri for r in rows) and [r.row for r in rows] == list(range(6))


def test_invalid_utf8_inside_a_string_column(store: Storage) -> None:
    # Writers other than Arrow can put invalid UTF-8 in a "string" column; it must not crash the shard.
    prompts = pa.array([b"good", b"caf\xe9"], pa.binary()).view(pa.string())
    uri = put_parquet(store, "in/latin1.parquet", pa.table({"prompt": prompts}))
    rows = read_shard(ShardSpec(0, uri, 0, 2))
    assert rows[0].prompt == "good"
    assert _reasons(rows) == {"latin1-00000001": "prompt is not valid UTF-8 (byte 0xe9 at offset 3)"}


def test_bad_ids_become_bad_rows(store: Storage) -> None:
    table = pa.table({"id": ["a", None, "a", "x/y", "..", "ok"], "prompt": ["p"] * 6})
    uri = put_parquet(store, "in/ids.parquet", table)
    reasons = _reasons(read_shard(ShardSpec(0, uri, 0, 6)))
    assert reasons["ids-00000001"] == "id is null"
    assert reasons["a"] == "duplicate id 'a' (first at row 0)"
    assert "not usable as an object name" in reasons["ids-00000003"]
    assert "not usable as an object name" in reasons["ids-00000004"]
    assert len(reasons) == 4


def test_integer_ids_are_used_as_strings(store: Storage) -> None:
    uri = put_parquet(store, "in/n.parquet", pa.table({"id": [10, 11], "prompt": ["p", "q"]}))
    assert [r.sample_id for r in read_shard(ShardSpec(0, uri, 0, 2))] == ["10", "11"]


def test_huge_prompt_is_read_as_is(store: Storage) -> None:
    huge = "a very detailed scene, " * 100_000  # 2.3 MB: the model rejects it later, not the reader
    uri = put_parquet(store, "in/huge.parquet", pa.table({"prompt": [huge, "small"]}))
    rows = read_shard(ShardSpec(0, uri, 0, 2))
    assert rows[0].prompt == huge and rows[1].prompt == "small"


def test_missing_prompt_column_names_file_and_columns(store: Storage) -> None:
    uri = put_parquet(store, "in/nocol.parquet", pa.table({"text": ["x"], "id": ["a"]}))
    with pytest.raises(InputError, match=r"nocol\.parquet has no `prompt` column.*\['text', 'id'\]"):
        read_shard(ShardSpec(0, uri, 0, 1))


@pytest.mark.parametrize(
    ("column", "values", "want"),
    [
        ("prompt", [1, 2], "string or binary"),
        ("seed", ["x", "y"], "integer"),
        ("negative_prompt", [1.0, 2], "string"),
    ],
)
def test_wrongly_typed_columns_are_refused(store: Storage, column: str, values: list, want: str) -> None:
    table = pa.table({"prompt": ["a", "b"]}).drop_columns(["prompt"] if column == "prompt" else [])
    uri = put_parquet(store, "in/typed.parquet", table.append_column(column, pa.array(values)))
    with pytest.raises(InputError, match=rf"typed\.parquet: column `{column}` has type .*expected {want}"):
        read_shard(ShardSpec(0, uri, 0, 2))


@pytest.mark.parametrize("content", [b"this is not parquet at all", b"PAR1" + b"\x00" * 64])
def test_corrupt_parquet_names_the_file(store: Storage, content: bytes) -> None:
    store.write_bytes("in/corrupt.parquet", content)
    uri = store.join("in/corrupt.parquet")
    with pytest.raises(InputError, match=r"corrupt\.parquet is not a readable Parquet file"):
        plan_shards([uri], 10)
    with pytest.raises(InputError, match=r"corrupt\.parquet is not a readable Parquet file"):
        read_shard(ShardSpec(0, uri, 0, 1))


def test_truncated_parquet_names_the_file(store: Storage) -> None:
    good = put_parquet(store, "in/t.parquet", _prompts(100))
    store.write_bytes("in/t.parquet", store.read_bytes("in/t.parquet")[:-20])
    with pytest.raises(InputError, match=r"t\.parquet"):
        read_shard(ShardSpec(0, good, 0, 100))


def test_missing_file_and_out_of_range_shard(store: Storage) -> None:
    uri = put_parquet(store, "in/s.parquet", _prompts(3))
    with pytest.raises(InputError, match=r"s\.parquet has 3 rows.*rows 2\.\.4"):
        read_shard(ShardSpec(0, uri, 2, 5))
    with pytest.raises(InputError, match=r"gone\.parquet does not exist"):
        read_shard(ShardSpec(0, store.join("in/gone.parquet"), 0, 1))


def test_empty_and_all_null_columns(store: Storage) -> None:
    uri = put_parquet(store, "in/nulls.parquet", pa.table({"prompt": pa.nulls(2), "seed": pa.nulls(2)}))
    assert _reasons(read_shard(ShardSpec(0, uri, 0, 2))) == {
        "nulls-00000000": "prompt is null",
        "nulls-00000001": "prompt is null",
    }
    empty = put_parquet(store, "in/empty.parquet", _prompts(0))
    assert plan_shards([empty], 5) == [] and read_shard(ShardSpec(0, empty, 0, 0)) == []


@pytest.mark.s3
def test_wrong_credentials_on_input_are_clear(bucket, monkeypatch) -> None:
    uri = put_parquet(open_storage(f"s3://{bucket}"), "in/p.parquet", _prompts(2))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(
        StorageError, match=rf"access denied.*s3://{bucket}|s3://{bucket}.*access denied"
    ) as e:
        expand_inputs([f"s3://{bucket}/in/"])
    assert "not-the-secret" not in str(e.value)
    for call in (lambda: plan_shards([uri], 1), lambda: read_shard(ShardSpec(0, uri, 0, 1))):
        with pytest.raises(
            StorageError, match=rf"cannot read {uri}: access denied; check the AWS credentials"
        ) as e:
            call()
        assert "not-the-secret" not in str(e.value)


@pytest.mark.s3
def test_nonexistent_bucket_in_a_shard_source(s3_endpoint: str) -> None:
    uri = "s3://no-such-bucket-sjd/in/p.parquet"
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-sjd' does not exist"):
        read_shard(ShardSpec(0, uri, 0, 1))


def test_plan_is_one_entry_per_file_and_computes_shards_on_demand(store: Storage) -> None:
    a = put_parquet(store, "in/a.parquet", _prompts(10), row_group_size=3)
    b = put_parquet(store, "in/b.parquet", pa.table({"id": ["x", "y", "z"], "prompt": ["p"] * 3}))
    plan = plan_inputs([a, b], shard_size=4)
    assert [(f.uri, f.rows, f.has_id) for f in plan.files] == [(a, 10, False), (b, 3, True)]
    assert len(plan) == 4 and plan.rows == 13 and list(plan) == plan_shards([a, b], 4)
    assert plan[3] == ShardSpec(3, b, 0, 3) and plan.shards_of(0) == range(0, 3)
    assert plan.first_rows() == (0, 10, 13)
    with pytest.raises(IndexError, match="shard 4 is not in this plan of 4 shards"):
        plan[4]


def test_plan_memory_does_not_grow_with_rows() -> None:
    """A plan of 10^11 rows is as small as its file list: shards are computed, never stored."""
    import tracemalloc

    from sjd_batch.io.shards import InputFile, ShardPlan

    files = tuple(InputFile(f"s3://b/part-{k:03d}.parquet", 10**9, True, 1, "0" * 16) for k in range(100))
    tracemalloc.start()
    plan = ShardPlan(files, shard_size=64)
    last = plan[len(plan) - 1]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(plan) == 100 * 15_625_000 and last.row_end == 10**9 and last.source.endswith("099.parquet")
    assert peak < 100_000, f"planning 10^11 rows took {peak} bytes"


def test_footer_digest_and_size_identify_the_content(store: Storage) -> None:
    a = put_parquet(store, "in/a.parquet", _prompts(5))
    first = plan_inputs([a], 2).files[0]
    assert first.size == len(store.read_bytes("in/a.parquet"))
    put_parquet(store, "in/a.parquet", _prompts(5, start=1))  # same rows, other prompts
    second = plan_inputs([a], 2).files[0]
    assert first.rows == second.rows and first.footer != second.footer
    assert plan_inputs([a], 2).files[0] == second  # stable for unchanged content


def test_generated_ids_must_follow_the_format_rules(store: Storage) -> None:
    from sjd_batch.io.ids import IdRules

    dotted = put_parquet(store, "in/part.0.parquet", _prompts(2))  # ids part.0-00000000, ...
    assert len(plan_inputs([dotted], 2, IdRules.for_format("png"))) == 1
    with pytest.raises(InputError, match=r"part\.0\.parquet has no `id` column.*output format webdataset"):
        plan_inputs([dotted], 2, IdRules.for_format("webdataset"))
    long_stem = put_parquet(store, "in/" + "é" * 96 + ".parquet", _prompts(1))  # 192 bytes + 9
    with pytest.raises(InputError, match=r"201 bytes"):
        plan_inputs([long_stem], 2)


def test_ids_are_checked_in_bytes_for_the_output_format(store: Storage) -> None:
    from sjd_batch.io.ids import IdRules

    ids = ["é" * 100, "é" * 100 + "x", "a.b", b"\xff\xfe".decode("latin-1")]  # 200 bytes, 201, a dot, ÿþ
    uri = put_parquet(store, "in/ids.parquet", pa.table({"id": ids, "prompt": ["p"] * 4}))
    png = _reasons(read_shard(ShardSpec(0, uri, 0, 4)))
    assert list(png) == ["ids-00000001"] and "(201 bytes) is not usable" in png["ids-00000001"]
    tar = _reasons(read_shard(ShardSpec(0, uri, 0, 4), IdRules.for_format("webdataset")))
    assert set(tar) == {"ids-00000001", "ids-00000002"} and "'.'" in tar["ids-00000002"]
    raw = put_parquet(store, "in/raw.parquet", pa.table({"id": pa.array([b"ok", b"\xff"], pa.binary()),
                                                         "prompt": ["p", "q"]}))
    assert _reasons(read_shard(ShardSpec(0, raw, 0, 2))) == {
        "raw-00000001": "id is not valid UTF-8 (byte 0xff at offset 0)"}


def test_write_local_prompts_keeps_a_file_of_that_size(tmp_path) -> None:
    from sjd_batch.io.prompts import write_local_prompts

    path, made = tmp_path / "p.parquet", []

    def make(n: int):  # noqa: ANN202
        return lambda: made.append(n) or _prompts(n)

    assert write_local_prompts(path, 3, make(3)) and made == [3]
    assert not write_local_prompts(path, 3, make(3)) and made == [3]  # there already: not even made
    assert write_local_prompts(path, 5, make(5)) and made == [3, 5]  # another size: rewritten
    rows = read_shard(ShardSpec(0, str(path), 0, 5))
    assert [r.prompt for r in rows] == [f"a photo of cat {i}" for i in range(5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.parquet"]  # no temporary file left

