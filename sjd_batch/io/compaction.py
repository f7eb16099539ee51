"""Compaction of a job's per-shard Parquet files into large ones, atomically, and the reader side of it.

Workers write one small file per shard (`stats/job_id=<id>/shard=00003/part-0.parquet`); 100k shards
make 100k objects, which S3 lists 1,000 at a time and DuckDB or Polars open one by one. `compact`
merges the committed ones into files of about `target_bytes` under a new generation folder:

    stats/_compacted/g000002-<run>/job_id=<id>/part-00000.parquet    shard is a column in these files
    stats/_manifest/00000002.json                                     which files, which shards they cover

Readers never list the folder to find the data: they read the latest manifest (one LIST of
`_manifest/`, one GET) and take its files, plus the per-shard files of the committed shards it does not
cover (`current_keys`). A compaction becomes visible in one step, when its manifest is created, and the
manifest is created only if absent, so two compactions racing for one generation cannot both win. So a
reader sees the old files or the new ones, never both (covered shards' own files are skipped even while
they still exist) and never neither (the per-shard files are deleted only after the manifest that
covers them, and after `grace_s`, so a reader that listed the old set a moment ago can finish).

Manifests are cumulative: each lists every compacted file so far. Rows are never rewritten in place.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from sjd_batch.io import layout
from sjd_batch.io.storage import Storage, StorageError

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class CompactedFile:
    """One compacted file: its key (from the output root), rows, bytes and the shards it holds."""

    key: str
    rows: int
    bytes: int
    shards: tuple[tuple[int, int], ...]  # [lo, hi) ranges


@dataclass(frozen=True)
class Manifest:
    """A folder's compacted files at one generation; `covered` are the shards they hold ([lo, hi))."""

    folder: str
    generation: int
    files: tuple[CompactedFile, ...]
    covered: tuple[tuple[int, int], ...]
    created: float

    def covers(self, shard: int) -> bool:
        return any(lo <= shard < hi for lo, hi in self.covered)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @staticmethod
    def from_json(data: bytes) -> Manifest:
        raw = json.loads(data)
        files = tuple(CompactedFile(f["key"], f["rows"], f["bytes"], tuple(map(tuple, f["shards"])))
                      for f in raw["files"])
        return Manifest(raw["folder"], raw["generation"], files, tuple(map(tuple, raw["covered"])),
                        raw["created"])


def latest_manifest(storage: Storage, folder: str) -> Manifest | None:
    """The folder's newest manifest, or None when it was never compacted."""
    keys = [k for k in storage.list(layout.manifest_folder(folder)) if k.endswith(".json")]
    if not keys:
        return None
    try:
        return Manifest.from_json(storage.read_bytes(max(keys)))  # zero-padded: the newest sorts last
    except (KeyError, TypeError, ValueError) as e:
        raise StorageError(f"{storage.join(max(keys))} is not a valid compaction manifest: {e}") from e


def committed_indices(storage: Storage) -> set[int]:
    """Shard numbers with a commit marker (one LIST, no reads)."""
    shards = (layout.shard_of(k) for k in storage.list(layout.COMMITS) if k.endswith(".json"))
    return {s for s in shards if s is not None}


def per_shard_keys(storage: Storage, folder: str) -> dict[int, str]:
    """Shard -> key of its own file in `folder` (what workers write), whether compacted or not."""
    return {found[1]: k for k in storage.list(f"{folder}/") if (found := layout.per_shard_file(k))}


def current_keys(storage: Storage, folder: str, committed: set[int] | None) -> list[str]:
    """The keys a reader of `folder` reads: the latest manifest's files, plus the per-shard files of
    shards it does not cover (only `committed` ones, unless None)."""
    manifest = latest_manifest(storage, folder)
    keys = [f.key for f in manifest.files] if manifest else []
    for shard, key in sorted(per_shard_keys(storage, folder).items()):
        if (committed is None or shard in committed) and not (manifest and manifest.covers(shard)):
            keys.append(key)
    return keys


def to_ranges(shards: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted shard numbers -> [lo, hi) ranges: {1, 2, 3, 7} -> ((1, 4), (7, 8))."""
    out: list[list[int]] = []
    for s in sorted(set(shards)):
        if out and out[-1][1] == s:
            out[-1][1] = s + 1
        else:
            out.append([s, s + 1])
    return tuple((lo, hi) for lo, hi in out)


@dataclass
class CompactResult:
    """What one `compact` call did to one folder."""

    folder: str
    generation: int = 0  # the manifest it created (0: nothing to do, or it lost a race)
    shards: int = 0  # shards merged now
    rows: int = 0
    files_written: int = 0
    files_deleted: int = 0
    lost_race: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def compact(storage: Storage, folder: str, schema: pa.Schema, metadata: dict[bytes, bytes],
            target_bytes: int = 64 << 20, grace_s: float = 60.0,
            log: Callable[[str], None] = lambda _: None) -> CompactResult:
    """Merge the committed, not yet compacted per-shard files of `folder` (see the module doc).

    `schema` is the per-shard files' schema (the compacted files add a `shard` int32 column);
    `metadata` goes into each compacted file's schema metadata (e.g. the schema version).
    """
    t0, result = time.perf_counter(), CompactResult(folder)
    old = latest_manifest(storage, folder)
    committed = committed_indices(storage)
    own = per_shard_keys(storage, folder)
    result.files_deleted += _collect_garbage(storage, folder, old, own, grace_s, log)
    todo = {s: k for s, k in sorted(own.items()) if s in committed and not (old and old.covers(s))}
    if not todo:
        result.seconds = time.perf_counter() - t0
        return result
    generation = (old.generation if old else 0) + 1
    base = layout.compacted_folder(folder, generation, uuid.uuid4().hex[:8])
    written = _write_files(storage, base, todo, schema, metadata, target_bytes, log)
    files = (*(old.files if old else ()), *written)
    covered = to_ranges([s for lo, hi in (old.covered if old else ()) for s in range(lo, hi)] + list(todo))
    manifest = Manifest(folder, generation, files, covered, time.time())
    if not storage.write_bytes(layout.manifest_key(folder, generation), manifest.to_json(), if_absent=True):
        for f in written:  # another compaction created this generation first: ours never became visible
            storage.delete(f.key)
        result.lost_race = True
        result.notes.append(f"another compaction of {folder} finished first; nothing changed")
        return result
    result.generation, result.shards = generation, len(todo)
    result.rows, result.files_written = sum(f.rows for f in written), len(written)
    log(f"{folder}: generation {generation} visible: {len(todo)} shards, {result.rows} rows in "
        f"{len(written)} file(s)")
    if grace_s > 0:
        log(f"{folder}: waiting {grace_s:.0f} s before deleting the merged per-shard files (readers that "
            "listed them just before may still read them; interrupting is safe: the next compact deletes "
            "them)")
        time.sleep(grace_s)
    result.files_deleted += _delete(storage, todo.values())
    result.seconds = time.perf_counter() - t0
    return result


def _write_files(storage: Storage, base: str, todo: dict[int, str], schema: pa.Schema,
                 metadata: dict[bytes, bytes], target_bytes: int,
                 log: Callable[[str], None]) -> list[CompactedFile]:
    """Stream the per-shard files in shard order into files of about `target_bytes`."""
    import pyarrow as pa

    out_schema = schema.append(pa.field("shard", pa.int32())).with_metadata(metadata)
    writer = _FileWriter(storage, out_schema)
    job_ids = {layout.per_shard_file(k)[0] for k in todo.values()}
    if len(job_ids) != 1:
        raise StorageError(f"{storage.join(base)}: per-shard files of several jobs ({sorted(job_ids)}); "
                           "an output holds one job")
    job_id = job_ids.pop()
    files: list[CompactedFile] = []
    for shard, table in _read_in_order(storage, todo, schema):
        writer.add(shard, table.append_column("shard", pa.array([shard] * table.num_rows, pa.int32())))
        if writer.size >= target_bytes:
            files.append(writer.finish(layout.compacted_file(base, job_id, len(files))))
            log(f"  wrote {files[-1].key} ({files[-1].rows} rows, {files[-1].bytes / 1e6:.1f} MB)")
    if writer.rows:
        files.append(writer.finish(layout.compacted_file(base, job_id, len(files))))
    expected = sum(t for t in writer.rows_in)
    if sum(f.rows for f in files) != expected:
        raise StorageError(f"compaction of {storage.join(base)} wrote {sum(f.rows for f in files)} rows, "
                           f"read {expected}: refusing to publish it")
    return files


def _read_in_order(storage: Storage, todo: dict[int, str], schema: pa.Schema,
                   window: int = 32) -> Iterator[tuple[int, pa.Table]]:
    """(shard, table) in shard order, with up to `window` reads in flight (S3 latency dominates)."""
    import pyarrow.parquet as pq

    def read(key: str) -> pa.Table:
        table = pq.read_table(io.BytesIO(storage.read_bytes(key)))
        return table.select(schema.names).cast(schema)

    items = list(todo.items())
    with ThreadPoolExecutor(max_workers=min(16, window)) as pool:
        futures = [pool.submit(read, k) for _, k in items[:window]]
        for i, (shard, _) in enumerate(items):
            table = futures[i].result()
            futures[i] = None  # release it
            if i + window < len(items):
                futures.append(pool.submit(read, items[i + window][1]))
            yield shard, table


class _FileWriter:
    """One compacted file being built in memory: row groups of at least 64k rows, zstd."""

    def __init__(self, storage: Storage, schema: pa.Schema, group_rows: int = 65536) -> None:
        self.storage, self.schema, self.group_rows = storage, schema, group_rows
        self.rows_in: list[int] = []
        self._reset()

    def _reset(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.sink = pa.BufferOutputStream()
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.pending: list[pa.Table] = []
        self.pending_rows, self.pending_bytes, self.rows, self.shards = 0, 0, 0, []

    @property
    def size(self) -> int:
        """Bytes so far: written row groups, plus the pending rows uncompressed (an overestimate)."""
        return self.sink.tell() + self.pending_bytes

    def add(self, shard: int, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        self.pending_bytes += table.nbytes
        self.rows += table.num_rows
        self.rows_in.append(table.num_rows)
        self.shards.append(shard)
        if self.pending_rows >= self.group_rows or self.pending_bytes >= 64 << 20:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending).replace_schema_metadata(
                self.schema.metadata), row_group_size=max(self.pending_rows, 1))
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def finish(self, key: str) -> CompactedFile:
        self._flush()
        self.writer.close()
        data = self.sink.getvalue().to_pybytes()
        self.storage.write_bytes(key, data)
        done = CompactedFile(key, self.rows, len(data), to_ranges(self.shards))
        self._reset()
        return done


def _collect_garbage(storage: Storage, folder: str, manifest: Manifest | None, own: dict[int, str],
                     grace_s: float, log: Callable[[str], None]) -> int:
    """Delete what an interrupted compaction left: per-shard files the manifest covers (once it is
    `grace_s` old), compacted files no manifest lists (of generations up to the latest), old manifests."""
    if manifest is None or time.time() - manifest.created < grace_s:
        return 0
    stale = [k for s, k in own.items() if manifest.covers(s)]
    listed = {f.key for f in manifest.files}
    for key in storage.list(f"{folder}/{layout.COMPACTED}/"):
        gen = layout.compacted_generation(folder, key)
        if key not in listed and 0 < gen <= manifest.generation:
            stale.append(key)
    manifests = sorted(storage.list(layout.manifest_folder(folder)))
    stale += manifests[:-2]  # keep the latest two
    if stale:
        log(f"{folder}: deleting {len(stale)} leftover file(s) of earlier compactions")
    return _delete(storage, stale)


def _delete(storage: Storage, keys: Iterable[str]) -> int:
    keys = list(keys)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(storage.delete, keys))
    return len(keys)
