"""Only a prompt the model rejects (`PromptRejected`) becomes a skipped sample; a bug in the model or
the engine fails the shard attempt, is retried and reported, and is never recorded as a lost sample."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from sjd_batch.driver import run_local
from sjd_batch.io import results
from sjd_batch.io.backends import open_storage
from tests.test_worker import make_job, write_prompts


def test_a_too_long_prompt_is_skipped_with_its_reason(tmp_path: Path) -> None:
    long = " ".join(["word"] * 500)  # tiny-random takes at most 64 prompt tokens
    prompts = write_prompts(tmp_path / "in" / "p.parquet",
                            pa.table({"id": ["a", "b", "c"], "prompt": ["a red circle", long, "a cross"]}))
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 3}, run={"batch_size": 3})
    summary = run_local(config, progress=False)
    assert summary.ok and summary.failed_samples == 1, summary.text()
    rows = {r["sample_id"]: r for r in results.read_stats(open_storage(config.output.uri)).to_pylist()}
    assert rows["b"]["image_key"] is None and "the model rejected the prompt" in rows["b"]["error"]
    assert "accepts at most 64" in rows["b"]["error"]
    assert rows["a"]["error"] is None and rows["c"]["error"] is None  # the batch's good rows were made


def test_a_bug_fails_the_shard_instead_of_skipping_rows(tmp_path: Path, monkeypatch) -> None:
    from sjd_batch.models.blocks.llama_t2i import LlamaT2IModel

    def broken(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - a programming error
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(LlamaT2IModel, "encode", broken)
    prompts = write_prompts(tmp_path / "in" / "p.parquet", 4)
    config = make_job([prompts], str(tmp_path / "out"), run={"max_retries": 1})
    summary = run_local(config, progress=False)
    assert not summary.ok and summary.retries == 1, summary.text()  # retried, then reported
    assert "TypeError: unsupported operand" in summary.failed[0]
    storage = open_storage(config.output.uri)
    assert not results.committed_shards(storage)  # nothing committed as "done with errors"
    assert results.read_stats(storage).num_rows == 0
