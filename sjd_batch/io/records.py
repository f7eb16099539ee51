"""The rows of a job's Parquet datasets, typed: `StatsRecord` with `STATS_SCHEMA` next to it, and the
errors file's `ERRORS_SCHEMA` (its rows are `prompts.BadRow`).

A `StatsRecord` is built in one place (`StatsRecord.of` for a decoded sample, `StatsRecord.failure` for
a sample that could not be produced) and written, as it is, by every path: fresh samples, samples
resumed from a shard's partial files, failed ones (whose `error` says why and whose statistics are
null). A test keeps the dataclass and the schema in step, column for column.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from sjd_batch.decoding.state import SampleStats

SCHEMA_VERSION = "1"  # of the stats and errors files' columns (the key layout has its own version)

# `job_id` and `shard` live in the path (hive partitions), not in the files.
PARTITION_SCHEMA = pa.schema([("job_id", pa.string()), ("shard", pa.int32())])

STATS_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("prompt", pa.string()),
        ("negative_prompt", pa.string()),
        ("seed", pa.int64()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("attempt", pa.int32()),
        ("actor", pa.string()),
        ("node", pa.string()),
        ("model", pa.string()),
        ("method", pa.string()),
        ("image_key", pa.string()),
        ("error", pa.string()),
        ("tokens", pa.int64()),
        ("nfe", pa.int64()),
        ("ar_steps", pa.int64()),
        ("step_compression", pa.float64()),
        ("accept_len_mean", pa.float64()),
        ("accept_lens", pa.list_(pa.int64())),
        ("drafts_tested", pa.int64()),
        ("drafts_accepted", pa.int64()),
        ("acceptance_rate", pa.float64()),
        ("accepted_by_offset", pa.list_(pa.int64())),
        ("tested_by_offset", pa.list_(pa.int64())),
        ("prefill_s", pa.float64()),
        ("decode_s", pa.float64()),
        ("pixel_s", pa.float64()),
        ("encode_s", pa.float64()),
        ("upload_s", pa.float64()),
        ("latency_s", pa.float64()),
        ("batch_size", pa.int64()),
        ("params_json", pa.string()),
        ("extra_json", pa.string()),
    ]
)

ERRORS_SCHEMA = pa.schema(
    [("sample_id", pa.string()), ("source", pa.string()), ("row", pa.int64()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class Provenance:
    """Where one sample came from and who made it: the fields every record of a sample has."""

    sample_id: str
    prompt: str
    negative_prompt: str | None
    seed: int  # the 64-bit sample seed
    source: str  # input Parquet URI
    row: int  # row index inside `source`
    attempt: int  # 0 for a shard's first try
    actor: str
    node: str
    model: str
    method: str


@dataclass(frozen=True)
class StatsRecord:
    """One stats row. Column meanings: README "Statistics"; engine statistics are `SampleStats`'."""

    sample_id: str
    prompt: str
    negative_prompt: str | None
    seed: int  # int64 view of the 64-bit seed (two's complement: seeds >= 2**63 read back negative)
    source: str
    row: int
    attempt: int
    actor: str
    node: str
    model: str
    method: str
    image_key: str | None  # null when the sample failed
    error: str | None  # null when the sample succeeded
    tokens: int | None = None
    nfe: int | None = None
    ar_steps: int | None = None
    step_compression: float | None = None
    accept_len_mean: float | None = None
    accept_lens: list[int] | None = None
    drafts_tested: int | None = None
    drafts_accepted: int | None = None
    acceptance_rate: float | None = None
    accepted_by_offset: list[int] | None = None
    tested_by_offset: list[int] | None = None
    prefill_s: float | None = None
    decode_s: float | None = None
    pixel_s: float | None = None
    encode_s: float | None = None
    upload_s: float | None = None
    latency_s: float | None = None  # from the start of the sample's decode to its image being stored
    batch_size: int | None = None
    params_json: str | None = None  # every decoding and sampling parameter, JSON with sorted keys
    extra_json: str | None = None  # engine extras (`SampleStats.extra`), JSON with sorted keys

    @staticmethod
    def of(where: Provenance, stats: SampleStats, image_key: str, encode_s: float, upload_s: float,
           latency_s: float) -> StatsRecord:
        """The record of a sample whose image is stored at `image_key`."""
        return StatsRecord(
            **_provenance(where), image_key=image_key, error=None, tokens=stats.tokens, nfe=stats.nfe,
            ar_steps=stats.ar_steps, step_compression=stats.step_compression,
            accept_len_mean=stats.accept_len_mean, accept_lens=list(stats.accept_lens),
            drafts_tested=stats.drafts_tested, drafts_accepted=stats.drafts_accepted,
            acceptance_rate=stats.acceptance_rate, accepted_by_offset=list(stats.accepted_by_offset),
            tested_by_offset=list(stats.tested_by_offset), prefill_s=stats.prefill_s, decode_s=stats.decode_s,
            pixel_s=stats.pixel_s, encode_s=encode_s, upload_s=upload_s, latency_s=latency_s,
            batch_size=stats.batch_size, params_json=_json(stats.params), extra_json=_json(stats.extra),
        )

    @staticmethod
    def failure(where: Provenance, error: str) -> StatsRecord:
        """The record of a sample that could not be produced: no image, no statistics, the reason."""
        return StatsRecord(**_provenance(where), image_key=None, error=error)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: dict[str, Any]) -> StatsRecord:
        return StatsRecord(**data)


def int64_seed(seed: int) -> int:
    """The stats `seed` column is int64: 64-bit seeds are stored as their two's-complement view."""
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def _provenance(where: Provenance) -> dict[str, Any]:
    fields = {f.name: getattr(where, f.name) for f in dataclasses.fields(where)}
    fields["seed"] = int64_seed(where.seed)
    return fields


def _json(data: dict[str, object]) -> str | None:
    return json.dumps(data, sort_keys=True, default=str) if data else None


def stats_table(records: list[StatsRecord]) -> pa.Table:
    """Records -> a table of STATS_SCHEMA (column by column: no dict per row)."""
    columns = {name: [getattr(r, name) for r in records] for name in STATS_SCHEMA.names}
    return pa.Table.from_pydict(columns, schema=STATS_SCHEMA)
