"""The commit log: which shards are committed, in a few objects instead of one marker per shard.

A rerun must know what is left. Listing `_commits/` costs one LIST page per 1,000 shards and reading the
markers one GET each: minutes for 100k shards on S3. The driver sees every shard that commits (or that a
worker finds committed), so it writes what it saw to an append-only log, a few immutable parts:

    _commitlog/part-<run>-000001.parquet     shard, rows, errors, seconds: one row per committed shard
    _commitlog/merged-<run>.parquet          the union of earlier parts, written at the start of a run

A part is written every `flush_every` commits or `flush_s` seconds and when the run ends, so a driver
killed mid-job loses at most that much of the log. A reader takes the union of every part (a shard in
two parts is the same commit: markers are create-only). When there are more than `MERGE_PARTS` parts,
the next run writes their union as one merged part, then deletes the parts it merged (a crash between
the two only leaves duplicates, which the union absorbs).

The markers stay the truth. The log only ever names shards whose marker the driver knew to exist, and
sjd-batch never deletes markers, so everything in the log is committed. A committed shard missing from
the log (its commit came after the last flush of a killed driver) is simply run again: the worker finds
its marker with one HEAD and reports it committed, and the log learns it. `reconcile` lists the markers
and rewrites the log to match them (`sjd-batch plan --verify`), for outputs edited by hand.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sjd_batch.io import layout
from sjd_batch.io.storage import Storage, StorageError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

MERGE_PARTS = 16
_COLUMNS = ("shard", "rows", "errors", "seconds")


@dataclass(frozen=True)
class LoggedCommit:
    """One committed shard as the log knows it: stats rows, bad input rows, seconds the attempt took."""

    shard: int
    rows: int
    errors: int
    seconds: float


@dataclass(frozen=True)
class CommitSet:
    """The committed shards the log knows, as sorted arrays (a few bytes per shard, not an object)."""

    shards: np.ndarray  # int64, sorted, unique
    rows: np.ndarray  # int64
    errors: np.ndarray  # int64
    seconds: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.shards)

    def __contains__(self, shard: int) -> bool:
        import numpy as np

        i = int(np.searchsorted(self.shards, shard))
        return i < len(self.shards) and int(self.shards[i]) == shard

    def __iter__(self) -> Iterator[LoggedCommit]:
        return (LoggedCommit(int(s), int(r), int(e), float(t))
                for s, r, e, t in zip(self.shards, self.rows, self.errors, self.seconds, strict=True))

    def mask(self, n: int) -> np.ndarray:
        """bool [n]: which of shards 0..n-1 are committed."""
        import numpy as np

        done = np.zeros(n, dtype=bool)
        done[self.shards[(self.shards >= 0) & (self.shards < n)]] = True
        return done

    @staticmethod
    def of(tables: list[pa.Table]) -> CommitSet:
        """The union of log parts (a shard in several parts is one commit: markers are create-only)."""
        import numpy as np

        cols = {c: np.concatenate([np.zeros(0), *(t.column(c).to_numpy() for t in tables)]) for c in _COLUMNS}
        shards, first = np.unique(cols["shard"].astype(np.int64), return_index=True)
        return CommitSet(shards, cols["rows"][first].astype(np.int64), cols["errors"][first].astype(np.int64),
                         cols["seconds"][first].astype(np.float64))


def read_log(storage: Storage, keys: list[str] | None = None) -> CommitSet:
    """The union of every part of the log (or of `keys`); empty when there is none."""
    keys = _parts(storage) if keys is None else keys
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(keys)))) as pool:
        return CommitSet.of(list(pool.map(lambda k: _read_part(storage, k), keys)))


def _parts(storage: Storage) -> list[str]:
    return [k for k in storage.list(layout.COMMIT_LOG) if k.endswith(".parquet")]


def _read_part(storage: Storage, key: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(io.BytesIO(storage.read_bytes(key)), columns=list(_COLUMNS))
    except (pa.ArrowInvalid, KeyError) as e:
        raise StorageError(f"commit log part {storage.join(key)} is not readable ({e}); delete "
                           f"{storage.join(layout.COMMIT_LOG)} and run `sjd-batch plan --verify` to "
                           "rebuild it from the commit markers") from e


def _table(commits: Iterable[LoggedCommit]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(commits, key=lambda c: c.shard)
    table = pa.table({"shard": pa.array([c.shard for c in rows], pa.int64()),
                      "rows": pa.array([c.rows for c in rows], pa.int64()),
                      "errors": pa.array([c.errors for c in rows], pa.int64()),
                      "seconds": pa.array([c.seconds for c in rows], pa.float64())})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class CommitLog:
    """The driver's side: `add` each commit it sees; parts are written as the module doc says."""

    def __init__(self, storage: Storage, flush_every: int = 1000, flush_s: float = 30.0) -> None:
        self.storage, self.flush_every, self.flush_s = storage, flush_every, flush_s
        self.run = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.pending: list[LoggedCommit] = []
        self.seq, self.last_flush = 0, time.monotonic()

    def add(self, commit: LoggedCommit) -> None:
        self.pending.append(commit)
        if len(self.pending) >= self.flush_every or time.monotonic() - self.last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        """Write the pending commits as one new part (nothing when there are none)."""
        self.last_flush = time.monotonic()
        if not self.pending:
            return
        self.seq += 1
        self.storage.write_bytes(layout.commit_log_part(self.run, self.seq), _table(self.pending),
                                 if_absent=True)
        self.pending = []

    def merge(self) -> int:
        """If the log has more than `MERGE_PARTS` parts, replace them by one; returns parts removed."""
        keys = _parts(self.storage)
        if len(keys) <= MERGE_PARTS:
            return 0
        union = read_log(self.storage, keys)  # exactly the parts we then delete: one written meanwhile stays
        self.storage.write_bytes(layout.commit_log_merged(self.run), _table(union), if_absent=True)
        _delete(self.storage, keys)
        return len(keys)


def reconcile(storage: Storage) -> tuple[set[int], set[int]]:
    """Make the log match the commit markers (one LIST of `_commits/` and a GET per marker the log
    lacks). Returns (shards the log lacked, shards the log named without a marker)."""
    import json

    old = _parts(storage)
    logged = read_log(storage, old)
    markers = {s for k in storage.list(layout.COMMITS) if k.endswith(".json")
               if (s := layout.shard_of(k)) is not None}
    known = {int(s) for s in logged.shards}
    missing, stale = markers - known, known - markers
    if not missing and not stale:
        return missing, stale

    def load(shard: int) -> LoggedCommit:
        body = json.loads(storage.read_bytes(layout.commit_key(shard)))
        return LoggedCommit(shard, body.get("rows", 0), body.get("errors", 0), body.get("seconds", 0.0))

    with ThreadPoolExecutor(max_workers=16) as pool:
        found = list(pool.map(load, sorted(missing)))
    truth = [c for c in logged if c.shard in markers] + found
    storage.write_bytes(layout.commit_log_merged(f"verify-{uuid.uuid4().hex[:8]}"), _table(truth),
                        if_absent=True)
    _delete(storage, old)
    return missing, stale


def _delete(storage: Storage, keys: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(keys)))) as pool:
        list(pool.map(storage.delete, keys))
