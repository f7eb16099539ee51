"""`sjd-batch stats OUTPUT_URI [--json] [--by COLUMN]`: a summary of a job's stats dataset.

Reads the committed shards only, with pyarrow (the README shows the same queries in DuckDB and
Polars). Per group: sample count, mean and percentiles of step compression (which is also a sample's
mean accept length, so it is not repeated) and latency, the pooled acceptance (drafts accepted over
drafts tested), and images/s (`sjd_batch/throughput.py`: the group's images over the wall-clock span
of the shards that made them, from the commit markers, so it reflects the whole pool of actors). The
README's "Figures" section defines each of them.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from sjd_batch import throughput
from sjd_batch.commands.reading import print_json, query_output
from sjd_batch.io.storage import Storage

METRICS = ("step_compression", "latency_s")
QUANTILES = (0.5, 0.9, 0.99)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output URI (local folder or s3://bucket/prefix)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--by", metavar="COLUMN", help="group by a stats column (e.g. method, shard, node)")


def summarize(storage: Storage, by: str | None = None) -> dict[str, Any]:
    """{"total": {...}, "groups": {value: {...}}} computed with pyarrow.compute."""
    from sjd_batch.io import results

    table = results.read_stats(storage)
    if by is not None and by not in table.column_names:
        raise ValueError(f"--by {by}: no such stats column; columns: {sorted(table.column_names)}")
    commits = results.committed_shards(storage)
    spans = {i: (str(c.get("job_id")), c.get("started_at"), c.get("finished_at")) for i, c in commits.items()}
    out: dict[str, Any] = {"total": _summary(table, spans)}
    if by is not None:
        keys = sorted(set(table.column(by).to_pylist()), key=lambda v: (v is None, str(v)))
        out["by"] = by
        out["groups"] = {str(k): _summary(_where(table, by, k), spans) for k in keys}
    return out


def _where(table: Any, column: str, value: Any) -> Any:
    import pyarrow.compute as pc

    col = table.column(column)
    mask = pc.is_null(col) if value is None else pc.equal(col, value)
    return table.filter(mask)


def _summary(table: Any, spans: dict[int, tuple]) -> dict[str, Any]:
    import pyarrow.compute as pc

    out: dict[str, Any] = {"samples": table.num_rows, "shards": len(set(table.column("shard").to_pylist()))}
    for name in METRICS:
        col = pc.drop_null(table.column(name))
        if len(col) == 0:
            out[name] = None
            continue
        qs = pc.quantile(col, q=list(QUANTILES)).to_pylist()
        out[name] = {"mean": pc.mean(col).as_py()}
        out[name].update({f"p{int(q * 100)}": v for q, v in zip(QUANTILES, qs, strict=True)})
    tested = pc.sum(table.column("drafts_tested")).as_py()
    out["acceptance"] = pc.sum(table.column("drafts_accepted")).as_py() / tested if tested else None
    out["images_per_s"] = _images_per_s(table, spans)
    return out


def _images_per_s(table: Any, spans: dict[int, tuple]) -> float | None:
    """The one images/s (`throughput.py`): images (rows without an error) over the shards' spans per job."""
    import pyarrow.compute as pc

    by_job: dict[str, list[tuple]] = {}
    for shard in set(table.column("shard").to_pylist()):
        if shard in spans:
            job, start, end = spans[shard]
            by_job.setdefault(job, []).append((start, end))
    images = table.num_rows - pc.count(table.column("error")).as_py()  # count: the non-null errors
    return throughput.images_per_s(images, throughput.jobs_seconds(by_job))


def main(args: argparse.Namespace) -> int:
    summary = query_output("stats", args.output, lambda storage: summarize(storage, args.by))
    if summary is None:
        return 2
    if args.json:
        print_json(summary)
    else:
        print(_table(summary))
    return 0


def _table(summary: dict[str, Any]) -> str:
    groups = summary.get("groups", {})
    rows = [("total", summary["total"])] + [(f"{summary['by']}={k}", v) for k, v in groups.items()]
    head = f"{'group':<24} {'samples':>8} {'img/s':>8} {'accept':>7}" + "".join(
        f" | {m:>16} {'p50':>7} {'p90':>7} {'p99':>7}" for m in METRICS
    )
    lines = [head + "   (first value of each metric: mean)"]
    for name, s in rows:
        line = f"{name[:24]:<24} {s['samples']:>8} {_fmt(s['images_per_s']):>8} {_fmt(s['acceptance']):>7}"
        for m in METRICS:
            v = s[m] or {}
            cells = "".join(f" {_fmt(v.get(p)):>7}" for p in ("p50", "p90", "p99"))
            line += f" | {_fmt(v.get('mean')):>16}{cells}"
        lines.append(line)
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
