"""Stage 3: one `Decoded` sample -> its image stored, and its `StatsRecord` (built here, and only here).

Runs in the worker's upload threads, so PNG encoding and uploads overlap the next decode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sjd_batch.io import formats, layout
from sjd_batch.io.records import Provenance, StatsRecord
from sjd_batch.io.results import encode_png
from sjd_batch.io.storage import Storage
from sjd_batch.stages.tasks import Decoded


@dataclass(frozen=True)
class Placement:
    """Who produces a shard's samples, for the provenance columns of the stats."""

    shard: int
    attempt: int
    actor: str
    node: str
    model: str
    method: str


class ImageEncoder:
    """PNG-encodes and stores images where the layout says; the PNGs of a packed format (webdataset,
    parquet) wait under `_partial/` until `commit` packs the shard's tar or Parquet file."""

    def __init__(self, storage: Storage, fmt: str) -> None:
        self.storage, self.fmt = storage, fmt
        self.packed = fmt in formats.PACKED

    def __call__(self, sample: Decoded, where: Placement) -> StatsRecord:
        task, result = sample.task, sample.result
        row = task.row
        prov = Provenance(row.sample_id, row.prompt, row.negative_prompt, task.seed, row.source, row.row,
                          where.attempt, where.actor, where.node, where.model, where.method)
        if result is None or result.pixels is None:
            return StatsRecord.failure(prov, sample.error or "no image was decoded")
        t0 = time.perf_counter()
        png = encode_png(result.pixels)
        t1 = time.perf_counter()
        dest = layout.partial_image_key(where.shard, row.row) if self.packed else \
            layout.image_key(where.shard, row.sample_id)
        self.storage.write_bytes(dest, png)
        t2 = time.perf_counter()
        # where the stats say the image is once the shard is committed
        ref = layout.image_ref(where.shard, row.sample_id, self.fmt)
        return StatsRecord.of(prov, result.stats, ref, encode_s=t1 - t0, upload_s=t2 - t1,
                              latency_s=t2 - sample.started)
