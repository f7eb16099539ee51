"""Stage 4: finished records -> partial files while the shard runs, then its outputs and, last, its marker.

Exactly once, per shard: every image and the stats file are written first and the commit marker last,
so a reader that trusts committed shards only never sees a partial shard. Inside an uncommitted shard,
a group of samples is done once its partial file (the group's `StatsRecord`s as JSON, written after all
their images) exists; a retry skips done samples and regenerates the rest. One partial file per group,
not per sample, keeps the writes per sample close to one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sjd_batch.config import redact_uri
from sjd_batch.io import formats, layout, results
from sjd_batch.io.prompts import BadRow
from sjd_batch.io.records import StatsRecord
from sjd_batch.io.storage import Storage
from sjd_batch.stages.tasks import ShardInput

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitInfo:
    """What the commit marker says besides the counts: who committed the shard, and when."""

    attempt: int
    actor: str
    node: str
    started_at: float  # epoch seconds
    finished_at: float
    seconds: float
    decode_s: float = 0.0  # of `seconds`, in the model


class ShardCommitter:
    """Writes one job's shard outputs through `layout`'s keys."""

    def __init__(self, storage: Storage, job_id: str, model: str, method: str, fmt: str) -> None:
        self.storage, self.job_id, self.fmt = storage, job_id, fmt
        self.meta = {"job_id": job_id, "model": model, "method": method}

    def is_committed(self, shard: int) -> bool:
        return self.storage.exists(layout.commit_key(shard))  # one HEAD, not a read of every marker

    def done_records(self, shard: int) -> dict[str, StatsRecord]:
        """Records left by earlier attempts of this shard: one LIST, not one HEAD per sample."""
        done = {}
        for key in self.storage.list(layout.partial_folder(shard)):
            if layout.is_partial_records(key):
                records = [StatsRecord.from_json(r) for r in json.loads(self.storage.read_bytes(key))]
                done.update((r.sample_id, r) for r in records)
        return done

    def save_group(self, shard: int, records: list[StatsRecord]) -> None:
        """Once every image of a group is stored, one partial file marks the whole group done."""
        if records:
            body = json.dumps([r.to_json() for r in records]).encode()
            self.storage.write_bytes(layout.partial_records_key(shard, records[0].row), body)

    def commit(self, shard_in: ShardInput, records: list[StatsRecord], info: CommitInfo) -> bool:
        """Write the image format's dataset files (`formats`), stats and errors, then the marker.
        False if already committed."""
        spec = shard_in.spec
        records = sorted(records, key=lambda r: shard_in.order[r.sample_id])
        self._write_dataset_files(spec.index, records)
        skey = layout.stats_key(self.job_id, spec.index)
        results.write_stats(self.storage, skey, records, self.meta)
        bad = sorted(shard_in.bad, key=lambda b: b.row)
        ekey = self._write_errors(spec.index, bad)
        body = {"job_id": self.job_id, "rows": len(records), "errors": len(bad), "stats_key": skey,
                "errors_key": ekey, "attempt": info.attempt, "actor": info.actor, "node": info.node,
                "source": redact_uri(spec.source), "row_start": spec.row_start, "row_end": spec.row_end,
                "started_at": info.started_at, "finished_at": info.finished_at, "seconds": info.seconds,
                "decode_s": info.decode_s}
        committed = results.write_commit(self.storage, spec.index, body)  # last: the shard becomes visible
        self.cleanup(spec.index)
        return committed

    def _write_errors(self, shard: int, bad: list[BadRow]) -> str | None:
        if not bad:
            return None
        key = layout.errors_key(self.job_id, shard)
        results.write_errors(self.storage, key, bad, self.meta)
        return key

    def _write_dataset_files(self, shard: int, records: list[StatsRecord]) -> None:
        """png: the shard folder's metadata.jsonl; webdataset, parquet: the packed tar or Parquet file,
        from the PNGs staged under `_partial/`. Failed samples (no image) are in neither."""
        if self.fmt not in formats.PACKED:
            self.storage.write_bytes(layout.metadata_key(shard), formats.metadata_jsonl(records))
            return
        pack = formats.packer(self.fmt)
        for r in records:
            if r.image_key is not None:
                pack.add(r, self.storage.read_bytes(layout.partial_image_key(shard, r.row)))
        self.storage.write_bytes(layout.pack_key(shard, self.fmt), pack.getvalue())

    def cleanup(self, shard: int) -> None:
        """Best effort: partial files are useless once the shard is committed, and a later run sweeps
        what is left. The listing is guarded too: a store that fails right after the marker must not
        turn a committed shard into a failed one."""
        try:
            keys = self.storage.list(layout.partial_folder(shard))
        except Exception as e:  # noqa: BLE001 - leftovers are harmless, never fail a committed shard
            log.warning("could not list the partial files of shard %d: %s", shard, e)
            return
        for key in keys:
            try:
                self.storage.delete(key)
            except Exception as e:  # noqa: BLE001 - leftovers are harmless, never fail a committed shard
                log.warning("could not delete %s: %s", key, e)
