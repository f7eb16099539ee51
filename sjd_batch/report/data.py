"""What a report reads: one or more job outputs, through the storage layer, and the numbers shown.

`load_job(uri)` reads a job output exactly as `sjd-batch status` and `sjd-batch stats` see it: `job.json`
(the plan and config), the stats rows of committed shards, the commit markers (each shard's wall-clock
start and finish), the failure records of shards that never committed, and the skipped input rows.
`summarize` turns the combined stats into one `GroupSummary` per job (or method, or model);
`acceptance_by_offset` gives each draft position's acceptance and `shard_spans` the timeline. Every
figure is defined once, in the README's "Figures" section, and computed here the same way. The contact
sheet's images are read in `thumbs.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sjd_batch import throughput
from sjd_batch.io import results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage

if TYPE_CHECKING:
    import numpy as np

LATENCY_QUANTILES = (0.5, 0.9, 0.99)


class ReportError(Exception):
    """A report cannot be built: no job at the URI, or a missing optional dependency."""


@dataclass
class JobOutput:
    """One job's output, as the report sees it. Only committed shards count, as for `stats`."""

    uri: str
    storage: Storage = field(repr=False)
    manifest: dict[str, Any]  # job.json
    stats: pa.Table  # STATS_SCHEMA + job_id, shard; committed shards only
    commits: dict[int, dict[str, Any]]  # shard -> commit marker (started_at, finished_at, actor, rows, ...)
    failed: dict[int, str]  # shard -> last error, for shards that failed after their retries
    pending: list[int]  # planned shards neither committed nor failed
    skipped: pa.Table  # ERRORS_SCHEMA: input rows skipped, with their reason
    label: str = ""  # unique among the jobs of one report; set by `label_jobs`

    @property
    def job_id(self) -> str:
        return str(self.manifest.get("job_id", "?"))

    @property
    def name(self) -> str:
        return str(self.manifest.get("config", {}).get("name", "?"))

    @property
    def model(self) -> str:
        return str(self.manifest.get("config", {}).get("model", {}).get("name", "?"))

    @property
    def method(self) -> str:
        return str(self.manifest.get("config", {}).get("method", {}).get("name", "?"))

    @property
    def planned(self) -> int:
        from sjd_batch.io.shards import planned_shard_count

        return planned_shard_count(self.manifest)


def load_job(uri: str) -> JobOutput:
    """Read a job output (local folder or s3:// prefix); `ReportError` if `uri` holds no job."""
    from sjd_batch.commands.status import job_status
    from sjd_batch.io.layout import JOB_FILE

    storage = open_storage(uri)
    if not storage.exists(JOB_FILE):
        raise ReportError(
            f"{uri} is not an sjd-batch job output: expected {storage.join(JOB_FILE)} (written when a job "
            "starts, next to images/, stats/ and _commits/); pass the job's output.uri"
        )
    try:
        manifest = json.loads(storage.read_bytes(JOB_FILE))
    except json.JSONDecodeError as e:
        raise ReportError(f"{storage.join(JOB_FILE)} is not valid JSON: {e}") from e
    status = job_status(storage)  # failed and pending shards, exactly as `sjd-batch status` reports them
    return JobOutput(
        uri=uri,
        storage=storage,
        manifest=manifest,
        stats=results.read_stats(storage),
        commits=results.committed_shards(storage),
        failed={int(k): v for k, v in status["failed"].items()},
        pending=list(status["pending"]),
        skipped=results.read_errors(storage),
    )


def label_jobs(jobs: list[JobOutput]) -> None:
    """Give every job a short, unique label: `method · model`, plus the name or id if needed."""
    for attempt in (lambda j: f"{j.method} · {j.model}", lambda j: f"{j.method} · {j.model} · {j.name}",
                    lambda j: f"{j.method} · {j.model} · {j.job_id}"):
        labels = [attempt(j) for j in jobs]
        if len(set(labels)) == len(labels):
            break
    for job, label in zip(jobs, labels, strict=True):
        job.label = label


def combined_stats(jobs: list[JobOutput]) -> pa.Table:
    """Every job's stats rows in one table (same schema), with a `job` column holding the job's label."""
    tables = [j.stats.append_column("job", pa.array([j.label] * j.stats.num_rows, pa.string())) for j in jobs]
    return pa.concat_tables(tables)


@dataclass(frozen=True)
class GroupSummary:
    """The numbers of one table row. `None` where the group has no value (e.g. no committed sample)."""

    key: str
    samples: int
    step_compression_mean: float | None  # mean over samples; a sample's is also its mean accept length
    step_compression_median: float | None
    acceptance: float | None  # pooled: drafts accepted / drafts tested, over every sample
    latency: dict[float, float | None]  # quantile -> latency_s
    wall_s: float | None  # summed over jobs: last commit minus first shard start of the group's shards
    images_per_s: float | None  # the one images/s (throughput.py): images (rows without error) / wall_s


def summarize(jobs: list[JobOutput], by: str) -> list[GroupSummary]:
    """One summary per distinct value of stats column `by` (`method`, `model` or `job`), sorted by it."""
    import pyarrow.compute as pc

    table = combined_stats(jobs)
    spans = {(j.job_id, shard): (c.get("started_at"), c.get("finished_at"))
             for j in jobs for shard, c in j.commits.items()}
    keys = sorted({str(v) for v in table.column(by).to_pylist()})
    return [_summary(key, table.filter(pc.equal(table.column(by), key)), spans) for key in keys]


def _summary(key: str, table: pa.Table, spans: dict[tuple[str, int], tuple]) -> GroupSummary:
    import pyarrow.compute as pc

    def column(name: str) -> pa.Array:
        return pc.drop_null(table.column(name))

    sc, lat = column("step_compression"), column("latency_s")
    tested, accepted = pc.sum(column("drafts_tested")).as_py(), pc.sum(column("drafts_accepted")).as_py()
    qs = pc.quantile(lat, q=list(LATENCY_QUANTILES)).to_pylist() if len(lat) else [None] * 3
    wall = _wall_s(table, spans)
    return GroupSummary(
        key=key,
        samples=table.num_rows,
        step_compression_mean=pc.mean(sc).as_py() if len(sc) else None,
        step_compression_median=pc.quantile(sc, q=0.5).to_pylist()[0] if len(sc) else None,
        acceptance=accepted / tested if tested else None,
        latency=dict(zip(LATENCY_QUANTILES, qs, strict=True)),
        wall_s=wall,
        images_per_s=throughput.images_per_s(table.num_rows - pc.count(table.column("error")).as_py(), wall),
    )


def _wall_s(table: pa.Table, spans: dict[tuple[str, int], tuple]) -> float | None:
    """Per job, the span from the first start to the last finish of the group's shards; summed over jobs.

    Spans come from the commit markers, so they cover every actor of the job at once (the pool's
    throughput, as `sjd-batch stats` reports it), and jobs run one after another do not count the gap.
    """
    by_job: dict[str, list[tuple]] = {}
    pairs = table.select(["job_id", "shard"]).group_by(["job_id", "shard"]).aggregate([])  # distinct shards
    for pair in pairs.to_pylist():
        job_id, shard = pair["job_id"], pair["shard"]
        by_job.setdefault(job_id, []).append(spans.get((job_id, shard), (None, None)))
    return throughput.jobs_seconds(by_job)


# --- timeline ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSpan:
    """One committed shard on the job's timeline, in seconds since the job's first shard started."""

    shard: int
    actor: str
    start_s: float
    end_s: float
    rows: int


def shard_spans(job: JobOutput) -> list[ShardSpan]:
    """The job's committed shards with their wall-clock spans (from the commit markers), by start time.

    The stats rows carry no per-sample finish time, only durations; a shard's samples become visible
    together when its commit marker is written, so the timeline counts them at the shard's finish.
    """
    timed = [(i, c) for i, c in job.commits.items()
             if all(isinstance(c.get(k), (int, float)) for k in ("started_at", "finished_at"))]
    if not timed:
        return []
    t0 = min(c["started_at"] for _, c in timed)
    spans = [ShardSpan(i, str(c.get("actor", "?")), c["started_at"] - t0, c["finished_at"] - t0,
                       int(c.get("rows", 0))) for i, c in timed]
    return sorted(spans, key=lambda s: (s.start_s, s.shard))


def finite(table: pa.Table, column: str) -> np.ndarray:
    """The finite values of a numeric stats column as float64 (nulls and NaNs dropped), for plotting."""
    import numpy as np
    import pyarrow.compute as pc

    values = pc.drop_null(table.column(column)).to_numpy().astype(np.float64)
    return values[np.isfinite(values)]


def accept_lengths(table: pa.Table) -> np.ndarray:
    """Every forward's accept length (`accept_lens` of all samples, flattened), as int64."""
    import numpy as np
    import pyarrow.compute as pc

    flat = pc.list_flatten(pc.drop_null(table.column("accept_lens")))
    return pc.drop_null(flat).to_numpy().astype(np.int64)


def acceptance_by_offset(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(draft positions 1..L-1, pooled acceptance at each), over every sample of `table`.

    Position k+1 is the window's k-th draft (`accepted_by_offset[k] / tested_by_offset[k]`, summed over
    samples before dividing, as the pooled acceptance is). Positions never tested are left out, so an
    AR job gives two empty arrays.
    """
    import numpy as np

    accepted = _summed_lists(table.column("accepted_by_offset").to_pylist())
    tested = _summed_lists(table.column("tested_by_offset").to_pylist())
    tested = np.pad(tested, (0, max(0, len(accepted) - len(tested))))
    accepted = np.pad(accepted, (0, len(tested) - len(accepted)))
    seen = np.flatnonzero(tested > 0)
    return seen + 1, accepted[seen] / tested[seen]


def _summed_lists(lists: list[list[int] | None]) -> np.ndarray:
    """Element-wise sum of integer lists of different lengths (nulls skipped), as int64."""
    import numpy as np

    out = np.zeros(max((len(v) for v in lists if v), default=0), dtype=np.int64)
    for v in lists:
        if v:
            out[: len(v)] += np.asarray(v, dtype=np.int64)
    return out
