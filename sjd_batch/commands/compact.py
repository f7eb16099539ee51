"""`sjd-batch compact OUTPUT`: merge a job's per-shard stats (and errors) files into large ones.

Atomic for readers that go through `sjd_batch.io.results` (`read_stats`, `stats_dataset`, `sjd-batch
stats`, the README's DuckDB/Polars/pyarrow recipes): they see the old files or the new ones, never both
and never neither (see `sjd_batch.io.compaction`). Only committed shards are merged, so it can run while
the job runs; shards committed later are merged by the next `compact`. Prints the rows and files before
and after; exits 1 if the counts differ (they never should), 2 on a bad output.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict

from sjd_batch.commands.reading import print_json, query_output
from sjd_batch.io.storage import Storage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output URI (local folder or s3://bucket/prefix)")
    parser.add_argument("--target-mb", type=float, default=64.0, help="size of a compacted file (MB)")
    parser.add_argument("--grace-s", type=float, default=60.0,
                        help="wait this long before deleting the merged files, for readers that listed "
                             "them just before (0: delete at once)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def compact_output(storage: Storage, target_bytes: int, grace_s: float,
                   log: Callable[[str], None] = print) -> dict:
    """Compact `stats/` and `errors/` of a job output; returns the figures `main` prints."""
    from sjd_batch.io import compaction, layout, results

    job = results.read_job_file(storage)
    metadata = {results.VERSION_KEY: results.SCHEMA_VERSION.encode(), b"job_id": str(job["job_id"]).encode()}
    report: dict = {"output": storage.uri, "folders": {}}
    counters = {"stats": lambda: results.stats_dataset(storage).count_rows(),
                "errors": lambda: results.read_errors(storage).num_rows}
    for folder, schema in ((layout.STATS, results.STATS_SCHEMA), (layout.ERRORS, results.ERRORS_SCHEMA)):
        folder = folder.rstrip("/")
        before = _count(storage, folder, counters[folder])
        done = compaction.compact(storage, folder, schema, metadata, target_bytes, grace_s, log)
        after = _count(storage, folder, counters[folder])
        report["folders"][folder] = {**asdict(done), "before": before, "after": after}
    return report


def _count(storage: Storage, folder: str, rows: Callable[[], int]) -> dict:
    """Rows a reader sees (committed shards) and the files it opens for them."""
    from sjd_batch.io import compaction

    committed = compaction.committed_indices(storage)
    return {"rows": rows(), "files": len(compaction.current_keys(storage, folder, committed))}


def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    report = query_output("compact", args.output, lambda storage: compact_output(
        storage, int(args.target_mb * 2**20), args.grace_s, log=(lambda _: None) if args.json else print))
    if report is None:
        return 2
    report["seconds"] = time.perf_counter() - t0
    ok = all(f["before"]["rows"] == f["after"]["rows"] for f in report["folders"].values())
    if args.json:
        print_json(report)
        return 0 if ok else 1
    for folder, f in report["folders"].items():
        what = (f"merged {f['shards']} shard(s) into {f['files_written']} file(s)" if f["generation"]
                else "nothing new to merge")
        print(f"{folder}: {what}; rows {f['before']['rows']} -> {f['after']['rows']}, files read "
              f"{f['before']['files']} -> {f['after']['files']}, {f['files_deleted']} deleted")
    print(f"{report['seconds']:.1f} s" + ("" if ok else "  ROW COUNTS DIFFER: please report this"))
    return 0 if ok else 1
