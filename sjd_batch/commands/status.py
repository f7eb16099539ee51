"""`sjd-batch status OUTPUT_URI`: committed, failed and pending shards of a job's output."""

from __future__ import annotations

import argparse
import json

from sjd_batch.commands.reading import print_json, query_output
from sjd_batch.io.storage import Storage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the job's output URI (local folder or s3://bucket/prefix)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def job_status(storage: Storage) -> dict:
    """Shard counts from `job.json` (the plan), the commit markers and the failure records."""
    from sjd_batch.io import layout, results
    from sjd_batch.io.shards import planned_shard_count

    job = results.read_job_file(storage)
    committed = results.committed_shards(storage)
    failed = {}
    for key in storage.list(layout.FAILURES):
        record = json.loads(storage.read_bytes(key))
        if record["shard"] not in committed:
            failed[record["shard"]] = record["error"]
    planned = range(planned_shard_count(job))
    return {
        "job_id": job.get("job_id"), "name": job.get("config", {}).get("name"), "shards": len(planned),
        "committed": sorted(committed), "failed": failed,
        "pending": [i for i in planned if i not in committed and i not in failed],
        "rows": sum(c.get("rows", 0) for c in committed.values()),
        "errors": sum(c.get("errors", 0) for c in committed.values()),
    }


def main(args: argparse.Namespace) -> int:
    status = query_output("status", args.output, job_status)
    if status is None:
        return 2
    if args.json:
        print_json(status)
        return 0
    print(f"job {status['job_id']} ({status['name']}) at {args.output}")
    print(f"  shards: {status['shards']} total, {len(status['committed'])} committed, "
          f"{len(status['failed'])} failed, {len(status['pending'])} pending")
    print(f"  samples in committed shards: {status['rows']} ({status['errors']} bad rows skipped)")
    for shard, error in sorted(status["failed"].items(), key=lambda kv: int(kv[0])):
        print(f"  shard {shard} failed: {error}")
    if status["pending"]:
        print(f"  pending shards: {_ranges(status['pending'])}")
    return 0


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    out: list[tuple[int, int]] = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in out)
