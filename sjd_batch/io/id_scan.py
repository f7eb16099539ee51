"""Duplicate sample ids across a whole job, found before any work, in bounded memory.

A sample id names an image and a stats row, so two rows with one id in different shards would give
two stats rows and one overwritten image. `read_shard` already skips a repeat inside one shard (with
its reason); `scan_ids` finds repeats across shards and files, explicit ids and the ids generated for
files without an `id` column alike (an explicit `part-0-00000007` collides with row 7 of
`part-0.parquet`).

How, for 100M ids in a few hundred MB (no set of every id in memory):
1. Read each file's `id` column one batch at a time (or generate the ids of a file without one), drop
   the ids `IdRules` refuses (their rows are skipped anyway), and hash each id to a 64-bit digest.
2. Append (digest, global row) pairs to one of P spill files chosen by the digest's top bits, with P
   such that one spill file holds at most `memory_bytes` of pairs.
3. Per spill file: sort by digest; a run of equal digests whose first and last rows fall in different
   shards is a candidate (shards are contiguous row ranges, so first and last decide).
4. Read the candidates' ids back and compare them exactly: a digest collision is not a duplicate, and
   only exactly equal ids in different shards are reported. Equal ids within one shard are left to
   `read_shard`.
Every id is read once; the spill holds 16 bytes per id (1.6 GB of temporary disk for 100M ids).
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from sjd_batch.io.ids import Hasher, IdRules, column_ids, generated_id, id_text
from sjd_batch.io.prompts import _open, file_stem
from sjd_batch.io.shards import ShardPlan

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

BATCH_ROWS = 1 << 17
_PAIR = [("digest", "<u8"), ("row", "<u8")]  # one spilled id: its digest and global row number


@dataclass(frozen=True)
class Occurrence:
    """Where an id occurs: a file, a row in it, and whether the id was generated from the file name."""

    uri: str
    row: int
    generated: bool

    def describe(self) -> str:
        return f"{self.uri} row {self.row}" + (" (generated: that file has no `id` column)"
                                                if self.generated else "")


@dataclass(frozen=True)
class Duplicate:
    """One id found in two shards: where it first occurs and where it occurs in another shard."""

    sample_id: str
    first: Occurrence
    again: Occurrence

    def describe(self) -> str:
        return f"{self.sample_id!r} at {self.first.describe()} and at {self.again.describe()}"


@dataclass
class IdScan:
    """What `scan_ids` found: ids checked, ids the rules refuse, and duplicates across shards."""

    ids: int = 0  # ids hashed and compared (usable ones, explicit or generated)
    unusable: int = 0  # null or refused by the rules: those rows are skipped with their reason
    duplicates: list[Duplicate] = field(default_factory=list)  # at most `limit`, in id order of discovery
    partitions: int = 0
    spilled_bytes: int = 0
    seconds: float = 0.0


def scan_ids(plan: ShardPlan, rules: IdRules, limit: int = 10, memory_bytes: int = 128 << 20,
             tmp_dir: str | None = None) -> IdScan:
    """Find up to `limit` ids that occur in two shards of `plan` (see the module doc)."""
    t0, scan = time.perf_counter(), IdScan()
    if not any(f.has_id for f in plan.files):  # generated ids only: unique by construction
        scan.seconds = time.perf_counter() - t0
        return scan
    parts = max(1, -(-plan.rows * 16 // memory_bytes))
    scan.partitions = 1 << (parts - 1).bit_length()
    with tempfile.TemporaryDirectory(prefix="sjd-id-scan-", dir=tmp_dir) as tmp:
        spill = _Spill(tmp, scan.partitions, memory_bytes // 4)
        hasher = Hasher(secrets.randbits(64))  # a fresh base: no input can be built to collide
        for rows, ids, mask in _id_batches(plan, rules):
            scan.unusable += int(len(mask) - mask.sum())
            kept = ids.filter(mask) if not mask.all() else ids
            spill.add(hasher.digests(kept), rows[mask])
            scan.ids += len(kept)
        spill.close()
        scan.spilled_bytes = spill.bytes
        for p in range(scan.partitions):
            if len(scan.duplicates) >= limit:
                break
            for group in _candidates(plan, spill.load(p)):
                scan.duplicates += _confirm(plan, group)
                if len(scan.duplicates) >= limit:
                    break
    scan.duplicates = scan.duplicates[:limit]
    scan.seconds = time.perf_counter() - t0
    return scan


def _id_batches(plan: ShardPlan, rules: IdRules) -> Iterator[tuple[np.ndarray, pa.Array, np.ndarray]]:
    """(global rows, ids as UTF-8 large_binary, usable mask) for every row, file by file."""
    import numpy as np

    for k, f in enumerate(plan.files):
        row0 = plan.first_rows()[k]
        if f.has_id:
            offset = 0
            for batch in _open(f.uri).iter_batches(batch_size=BATCH_ROWS, columns=["id"]):
                ids, mask = column_ids(batch.column(0), rules)
                yield np.arange(row0 + offset, row0 + offset + len(ids), dtype=np.uint64), ids, mask
                offset += len(ids)
        else:
            for start in range(0, f.rows, BATCH_ROWS):
                n = min(BATCH_ROWS, f.rows - start)
                ids = _generated(file_stem(f.uri), start, n)
                yield np.arange(row0 + start, row0 + start + n, dtype=np.uint64), ids, np.ones(n, bool)


def _generated(stem: str, start: int, n: int) -> pa.Array:
    """`generated_id(stem, row)` for rows [start, start + n), built in Arrow."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(start, start + n)), pa.string()), 8, "0")
    return pc.binary_join_element_wise(f"{stem}-", digits, "").cast(pa.large_binary())


class _Spill:
    """P append-only files of (digest, row) pairs, partitioned by the digest's top bits; writes are
    buffered up to `buffer_bytes` in all."""

    def __init__(self, folder: str, partitions: int, buffer_bytes: int) -> None:
        self.paths = [os.path.join(folder, f"part-{p:04d}.bin") for p in range(partitions)]
        self.shift = 64 - max(0, (partitions - 1).bit_length())
        self.buffer: dict[int, list] = defaultdict(list)
        self.buffered, self.limit, self.bytes = 0, max(1 << 16, buffer_bytes), 0

    def add(self, digests: np.ndarray, rows: np.ndarray) -> None:
        import numpy as np

        pairs = np.empty(len(digests), dtype=_PAIR)
        pairs["digest"], pairs["row"] = digests, rows
        if len(self.paths) == 1:
            self.buffer[0].append(pairs)
        else:
            part = (digests >> np.uint64(self.shift)).astype(np.int64) if self.shift < 64 else 0 * digests
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(len(self.paths) + 1))
            for p in np.flatnonzero(np.diff(bounds)):
                self.buffer[int(p)].append(pairs[order[bounds[p] : bounds[p + 1]]])
        self.buffered += pairs.nbytes
        if self.buffered >= self.limit:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        for p, chunks in self.buffer.items():
            with open(self.paths[p], "ab") as f:
                np.concatenate(chunks).tofile(f)
        self.bytes += self.buffered
        self.buffer.clear()
        self.buffered = 0

    def close(self) -> None:
        self.flush()

    def load(self, p: int) -> np.ndarray:
        import numpy as np

        path = self.paths[p]
        return np.fromfile(path, dtype=_PAIR) if os.path.exists(path) else np.empty(0, dtype=_PAIR)


def _candidates(plan: ShardPlan, pairs: np.ndarray) -> Iterator[np.ndarray]:
    """Global rows (ascending) of each run of equal digests that spans two shards.

    Pairs are spilled in row order, so selecting the repeated digests keeps their rows ascending; the
    full sort is of digests alone (8 bytes per id), and usually finds no repeat at all.
    """
    import numpy as np

    ordered = np.sort(pairs["digest"])
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    if not len(repeated):
        return
    chosen = pairs[np.isin(pairs["digest"], repeated)]
    chosen = chosen[np.argsort(chosen["digest"], kind="stable")]  # stable: rows stay ascending per run
    digests, rows = chosen["digest"], chosen["row"]
    starts = np.flatnonzero(np.concatenate([[True], digests[1:] != digests[:-1]]))
    ends = np.concatenate([starts[1:], [len(digests)]])
    shards = _shards_of(plan, rows)
    for s, e in zip(starts, ends, strict=True):
        if shards[s] != shards[e - 1]:  # shards are contiguous row ranges: first and last decide
            yield rows[s:e]


def _shards_of(plan: ShardPlan, rows: np.ndarray) -> np.ndarray:
    import numpy as np

    row0 = np.asarray(plan.first_rows(), dtype=np.uint64)
    first = np.asarray([plan.shards_of(k).start for k in range(len(plan.files))], dtype=np.int64)
    k = np.searchsorted(row0, rows, side="right") - 1
    return first[k] + ((rows - row0[k]) // np.uint64(plan.shard_size)).astype(np.int64)


def _confirm(plan: ShardPlan, rows: np.ndarray) -> list[Duplicate]:
    """Read the ids at `rows` (global, ascending) and report exactly equal ones in two shards."""
    shards = _shards_of(plan, rows).tolist()
    first: dict[str, tuple[int, int]] = {}  # id -> (global row, shard) of its first occurrence
    found: dict[str, Duplicate] = {}
    for row, shard, sid in zip(rows.tolist(), shards, _read_ids(plan, rows.tolist()), strict=True):
        if sid in first and first[sid][1] != shard and sid not in found:
            found[sid] = Duplicate(sid, _where(plan, first[sid][0]), _where(plan, row))
        first.setdefault(sid, (row, shard))
    return list(found.values())


def _where(plan: ShardPlan, row: int) -> Occurrence:
    """The file and row of global row `row`."""
    import bisect

    k = bisect.bisect_right(plan.first_rows(), row) - 1
    return Occurrence(plan.files[k].uri, row - plan.first_rows()[k], not plan.files[k].has_id)


def _read_ids(plan: ShardPlan, rows: list[int]) -> list[str]:
    """The sample ids at global `rows`, reading each needed row group once."""
    import bisect

    wanted: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        wanted[bisect.bisect_right(plan.first_rows(), row) - 1].append(row)
    ids: dict[int, str] = {}
    for k, group in wanted.items():
        f, row0 = plan.files[k], plan.first_rows()[k]
        if not f.has_id:
            ids.update((r, generated_id(file_stem(f.uri), r - row0)) for r in group)
            continue
        pf = _open(f.uri)
        starts = [0]
        for g in range(pf.metadata.num_row_groups):
            starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
        by_group: dict[int, list[int]] = defaultdict(list)
        for r in group:
            by_group[bisect.bisect_right(starts, r - row0) - 1].append(r)
        for g, members in by_group.items():
            column = pf.read_row_group(g, columns=["id"]).column(0)
            for r in members:
                ids[r] = id_text(column[r - row0 - starts[g]].as_py())[0] or ""
    return [ids[r] for r in rows]
