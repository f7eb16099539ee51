"""The commit log: parts, their union, merging, and repair from the commit markers (local and S3)."""

from __future__ import annotations

import json

import pytest

from sjd_batch.io import commit_log, layout
from sjd_batch.io.commit_log import CommitLog, CommitSet, LoggedCommit, read_log, reconcile
from sjd_batch.io.storage import Storage, StorageError


def _shards(log: CommitSet) -> list[int]:
    return [int(s) for s in log.shards]


def test_parts_are_written_as_commits_come_and_read_as_one_set(store: Storage) -> None:
    assert len(read_log(store)) == 0 and _shards(read_log(store)) == []
    log = CommitLog(store, flush_every=3)
    for shard in (5, 1, 9, 2):
        log.add(LoggedCommit(shard, rows=10 + shard, errors=1, seconds=2.5))
    assert len([k for k in store.list(layout.COMMIT_LOG)]) == 1  # the first three, one part
    log.add(LoggedCommit(1, 11, 1, 2.5))  # a shard seen twice (found committed again): one commit
    log.flush()
    log.flush()  # nothing pending: no empty part
    got = read_log(store)
    assert _shards(got) == [1, 2, 5, 9] and 9 in got and 3 not in got
    assert [(c.rows, c.errors, c.seconds) for c in got][:2] == [(11, 1, 2.5), (12, 1, 2.5)]
    assert got.mask(6).tolist() == [False, True, True, False, False, True]
    assert len(store.list(layout.COMMIT_LOG)) == 2


def test_a_part_is_written_after_flush_s_even_with_few_commits(store: Storage) -> None:
    log = CommitLog(store, flush_every=1000, flush_s=0.0)
    log.add(LoggedCommit(0, 1, 0, 1.0))
    assert _shards(read_log(store)) == [0]  # a driver killed now loses nothing of it


def test_many_parts_are_merged_into_one(store: Storage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit_log, "MERGE_PARTS", 3)
    for run in range(5):
        log = CommitLog(store)
        log.add(LoggedCommit(run, run, 0, 1.0))
        log.add(LoggedCommit(run + 10, run, 0, 1.0))
        log.flush()
    before = read_log(store)
    assert CommitLog(store).merge() == 5
    assert len(store.list(layout.COMMIT_LOG)) == 1 and _shards(read_log(store)) == _shards(before)
    assert CommitLog(store).merge() == 0  # one part: nothing to do


def test_reconcile_makes_the_log_match_the_markers(store: Storage) -> None:
    marker = json.dumps({"rows": 4, "errors": 1, "seconds": 3.0}).encode()
    for shard in (0, 1, 2, 3):
        store.write_bytes(layout.commit_key(shard), marker)
    log = CommitLog(store)
    for shard in (0, 1, 7):  # 2 and 3 were committed after the last flush; 7 has no marker (edited by hand)
        log.add(LoggedCommit(shard, 4, 1, 3.0))
    log.flush()
    missing, stale = reconcile(store)
    assert (missing, stale) == ({2, 3}, {7})
    repaired = read_log(store)
    assert _shards(repaired) == [0, 1, 2, 3] and [c.rows for c in repaired] == [4] * 4
    assert len(store.list(layout.COMMIT_LOG)) == 1
    assert reconcile(store) == (set(), set())  # in step: nothing written


def test_an_unreadable_part_is_a_clear_error(store: Storage) -> None:
    store.write_bytes(layout.commit_log_part("r", 1), b"not parquet")
    with pytest.raises(StorageError, match="commit log part .* is not readable.*plan --verify"):
        read_log(store)
