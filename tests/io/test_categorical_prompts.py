"""Dictionary-encoded (categorical) prompt columns, as pandas and Polars write them, are read by value."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sjd_batch.io.prompts import BadRow, PromptRow, ShardSpec, plan_inputs, read_shard

PROMPTS = ["a red circle", "a blue square", "a red circle", None, "a green cross"]


def _rows(path: Path, n: int) -> list:
    return read_shard(ShardSpec(index=0, source=str(path), row_start=0, row_end=n))


def test_pandas_polars_and_arrow_categoricals(tmp_path: Path) -> None:
    files = {
        "pandas": lambda p: pd.DataFrame({"prompt": pd.Categorical(PROMPTS),
                                          "id": pd.Categorical([f"s{i}" for i in range(5)])}).to_parquet(p),
        "polars": lambda p: pl.DataFrame({"prompt": PROMPTS}).with_columns(
            pl.col("prompt").cast(pl.Categorical)).write_parquet(p),
        "arrow": lambda p: pq.write_table(pa.table({
            "prompt": pa.array(PROMPTS).dictionary_encode(),
            "negative_prompt": pa.array(["blurry"] * 5).dictionary_encode()}), p),
    }
    for name, write in files.items():
        path = tmp_path / f"{name}.parquet"
        write(path)
        assert pa.types.is_dictionary(pq.read_schema(path).field("prompt").type), name  # really categorical
        rows = _rows(path, 5)
        assert [r.prompt for r in rows if isinstance(r, PromptRow)] == [p for p in PROMPTS if p], name
        assert [r.reason for r in rows if isinstance(r, BadRow)] == ["prompt is null"], name
        assert list(plan_inputs([str(path)], 2))[-1].row_end == 5
    arrow = _rows(tmp_path / "arrow.parquet", 5)
    assert {r.negative_prompt for r in arrow if isinstance(r, PromptRow)} == {"blurry"}
    assert [r.sample_id for r in _rows(tmp_path / "pandas.parquet", 5)] == [f"s{i}" for i in range(5)]
