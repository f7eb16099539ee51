"""Resume at scale: a rerun decides what is left from the commit log, not from the markers, and the
markers stay the truth when the log missed a commit. Runs in-process (`run_local`): no Ray needed."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sjd_batch.driver import run_local
from sjd_batch.io import layout
from sjd_batch.io.backends import open_storage
from sjd_batch.io.commit_log import CommitSet, read_log
from sjd_batch.io.shards import InputFile, ShardPlan
from sjd_batch.io.storage_local import LocalStorage
from sjd_batch.job import PreparedJob, prepare_job
from tests.test_worker import check_output, digest, make_job, write_prompts


@pytest.fixture
def done_job(tmp_path: Path) -> Any:
    prompts = write_prompts(tmp_path / "in" / "p.parquet", 16)
    config = make_job([prompts], str(tmp_path / "out"))  # shards of 4: 4 shards
    assert run_local(config, progress=False).shards_committed == 4
    return config


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record every list(prefix) and read_bytes(key) of local storages."""
    calls: list[tuple[str, str]] = []
    real_list, real_read = LocalStorage.list, LocalStorage.read_bytes

    def list_(self: LocalStorage, prefix: str = "") -> list[str]:
        calls.append(("list", prefix))
        return real_list(self, prefix)

    def read(self: LocalStorage, key: str) -> bytes:
        calls.append(("read", key))
        return real_read(self, key)

    monkeypatch.setattr(LocalStorage, "list", list_)
    monkeypatch.setattr(LocalStorage, "read_bytes", read)
    return calls


def test_a_rerun_reads_the_log_not_the_markers(done_job: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch)
    job = prepare_job(done_job)
    assert job.todo_count == 0 and job.todo_rows == 0 and list(job.todo()) == []
    assert not [c for c in calls if c[1].startswith(layout.COMMITS) or c[1] == ""], calls
    assert ("list", layout.COMMIT_LOG) in calls
    summary = run_local(done_job, progress=False)
    assert summary.complete_before and summary.generated == 0


def test_commits_the_log_missed_are_found_by_their_markers(done_job: Any) -> None:
    storage = open_storage(done_job.output.uri)
    before = digest(storage)
    shutil.rmtree(Path(done_job.output.uri) / "_commitlog")  # the driver died before its last flush
    assert prepare_job(done_job).todo_count == 4
    summary = run_local(done_job, progress=False)
    assert summary.ok and summary.generated == 0 and summary.shards_skipped == 4, summary.text()
    assert digest(storage) == before  # nothing rewritten
    assert [int(s) for s in read_log(storage).shards] == [0, 1, 2, 3]  # and the log learned them
    check_output(storage, {f"p{i:04d}" for i in range(16)}, shards=4)


def test_job_json_records_the_plan_per_file(done_job: Any) -> None:
    import json

    job = json.loads(open_storage(done_job.output.uri).read_bytes(layout.JOB_FILE))
    assert "shards" not in job and job["plan"]["shards"] == 4 and job["plan"]["shard_size"] == 4
    assert [f["rows"] for f in job["plan"]["files"]] == [16]


def test_what_is_left_of_a_huge_plan_is_computed_lazily(tmp_path: Path) -> None:
    """10^7 shards, 10^6 of them committed: counts without a list of shards, specs on demand."""
    files = tuple(InputFile(f"s3://b/p{k}.parquet", 64 * 10**5, True, 1, "0" * 16) for k in range(100))
    plan = ShardPlan(files, shard_size=64)
    done = np.arange(0, 10**7, 10, dtype=np.int64)
    ones = np.ones(len(done), dtype=np.int64)
    committed = CommitSet(done, ones, ones * 0, ones * 1.0)
    tracemalloc.start()
    job = PreparedJob(None, "id", open_storage(str(tmp_path)), plan, committed)  # type: ignore[arg-type]
    left = job.todo()
    first = [next(left).index for _ in range(3)]
    count, rows = job.todo_count, job.todo_rows
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert (len(plan), count, rows, first) == (10**7, 9 * 10**6, 9 * 10**6 * 64, [1, 2, 3])
    assert peak < 60 * 2**20, f"{peak / 2**20:.0f} MiB"  # a few bytes per shard, not an object each
