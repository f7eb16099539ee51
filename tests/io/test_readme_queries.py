"""The README's DuckDB, Polars and pyarrow recipes ("Querying the stats"), run as the README prints them on an
output that holds committed shards and shards still in flight, before and after `sjd-batch compact`."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from sjd_batch.commands.bench_output import fabricate
from sjd_batch.commands.compact import compact_output
from sjd_batch.io import compaction
from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage

README = Path(__file__).resolve().parents[2] / "README.md"
COMMITTED, IN_FLIGHT, ROWS = range(0, 6), range(6, 8), 3


def readme_recipe(output: str) -> str:
    """The first Python block of the README's "Querying the stats" section, aimed at `output`."""
    section = README.read_text().split("### Querying the stats", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block and '"outputs/demo"' in block.group(1), "the README's query recipe moved or changed shape"
    return block.group(1).replace('"outputs/demo"', repr(output))


def run_recipe(output: str) -> dict:
    namespace: dict = {}
    exec(compile(readme_recipe(output), str(README), "exec"), namespace)  # noqa: S102 - our own README
    return namespace


def check(found: dict) -> None:
    """What the recipe must give: committed shards only, `shard` an integer, every row once."""
    samples = len(COMMITTED) * ROWS
    compression = [2.0 + i / 10 for i in range(ROWS)]  # fabricate's per-row step compression
    [(method, n, mean, p90)] = found["by_method"]
    assert (method, n) == ("sjd", samples) and mean == pytest.approx(sum(compression) / ROWS)
    assert compression[1] < p90 <= compression[-1]
    by_shard = found["by_shard"]
    assert by_shard.schema["shard"].is_integer()
    assert by_shard["shard"].to_list() == list(COMMITTED) and by_shard["samples"].to_list() == [ROWS] * 6
    assert sorted(found["shard3"].column("sample_id").to_pylist()) == [f"s000003-{i}" for i in range(ROWS)]
    table = found["table"]
    expected = sorted(f"s{s:06d}-{i}" for s in COMMITTED for i in range(ROWS))
    assert sorted(table.column("sample_id").to_pylist()) == expected


def test_the_readme_recipes_before_and_after_compaction(store: Storage) -> None:
    fabricate(store, COMMITTED, rows=ROWS)
    fabricate(store, IN_FLIGHT, rows=ROWS, committed=False)  # written, not committed: never counted
    check(run_recipe(store.uri))
    report = compact_output(store, target_bytes=4096, grace_s=0)
    assert report["folders"]["stats"]["shards"] == len(COMMITTED)
    assert compaction.latest_manifest(store, "stats") is not None
    check(run_recipe(store.uri))


def test_the_recipe_can_fail(store: Storage) -> None:
    """Negative control: with one more shard committed, `check` refuses what the recipe then finds."""
    fabricate(store, range(0, 7), rows=ROWS)
    with pytest.raises(AssertionError):
        check(run_recipe(store.uri))


def test_read_stats_takes_a_uri_and_never_one_with_credentials(tmp_path: Path) -> None:
    from sjd_batch.io import results
    from sjd_batch.io.storage import StorageError

    output = open_storage(str(tmp_path / "out"))
    fabricate(output, range(2), rows=ROWS)
    uri = str(tmp_path / "out")
    assert results.read_stats(uri).num_rows == 2 * ROWS
    assert pl.scan_pyarrow_dataset(results.stats_dataset(uri)).select(pl.len()).collect().item() == 2 * ROWS
    with pytest.raises(StorageError) as caught:
        results.read_stats("s3://AKIAEXAMPLE:s3cr3t@bucket/out")
    assert "s3cr3t" not in str(caught.value)
