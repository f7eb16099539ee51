"""`sjd-batch bench-output`: time what a big job output costs to resume and to compact, on a
fabricated output of many committed shards (no model runs: the shards' files are written directly).

`--what compact`: `--shards` committed per-shard stats files (`--rows` each); `sjd-batch compact`
merges them; the DuckDB count over the README's dataset must be equal before and after.
`--what resume`: `--shards` committed shards; times how long a rerun takes to decide what is left.
For S3, pass an `s3://bucket/prefix` output (the AWS environment names the endpoint).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sjd_batch.io.storage import Storage

JOB_ID = "bench0000000000a"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--what", choices=("compact", "resume"), required=True)
    parser.add_argument("--output", required=True, help="a fresh folder or s3://bucket/prefix")
    parser.add_argument("--shards", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=4, help="stats rows per shard")
    parser.add_argument("--json", help="also save the figures to this file")


def fabricate(storage: Storage, shards: range, rows: int, committed: bool = True,
              threads: int = 16, job_id: str = JOB_ID) -> None:
    """Write the stats file and (if `committed`) the commit marker of each shard, plus `job.json`."""
    from sjd_batch.io import layout, results
    from sjd_batch.io.records import StatsRecord

    if not storage.exists(layout.JOB_FILE):
        storage.write_bytes(layout.JOB_FILE, json.dumps({"job_id": job_id, "config": {"name": "fabricated"},
                                                         "shards": []}).encode())

    def record(shard: int, i: int) -> StatsRecord:
        return StatsRecord(
            sample_id=f"s{shard:06d}-{i}", prompt=f"prompt {i}", negative_prompt=None, seed=shard * 1000 + i,
            source="fabricated.parquet", row=i, attempt=0, actor="actor", node="node", model="fabricated",
            method="sjd", image_key=None, error=None, step_compression=2.0 + i / 10, accept_lens=[1, 2, 3])

    def one(shard: int) -> None:
        stats = [record(shard, i) for i in range(rows)]
        key = layout.stats_key(job_id, shard)
        results.write_stats(storage, key, stats, {"job_id": job_id})
        if committed:
            results.write_commit(storage, shard, {"rows": rows, "errors": 0, "stats_key": key,
                                                  "seconds": 1.0})

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, shards))


def duckdb_count(storage: Storage) -> int:
    """The README's DuckDB query over the stats dataset: rows of committed shards."""
    import duckdb

    from sjd_batch.io import results

    stats = results.stats_dataset(storage)  # noqa: F841 - DuckDB finds it by its variable name
    return duckdb.sql("SELECT count(*) FROM stats").fetchall()[0][0]


def bench_compact(storage: Storage, shards: int, rows: int) -> dict[str, Any]:
    from sjd_batch.commands.compact import compact_output

    t0 = time.perf_counter()
    fabricate(storage, range(shards), rows)
    made = time.perf_counter() - t0
    t1 = time.perf_counter()
    before = duckdb_count(storage)
    read_before = time.perf_counter() - t1
    t2 = time.perf_counter()
    report = compact_output(storage, 64 << 20, grace_s=0, log=lambda _: None)
    compacted = time.perf_counter() - t2
    t3 = time.perf_counter()
    after = duckdb_count(storage)
    read_after = time.perf_counter() - t3
    stats = report["folders"]["stats"]
    return {"shards": shards, "rows_per_shard": rows, "fabricate_s": made, "duckdb_count_before": before,
            "duckdb_count_after": after, "expected": shards * rows, "files_before": stats["before"]["files"],
            "files_after": stats["after"]["files"], "compact_s": compacted, "query_before_s": read_before,
            "query_after_s": read_after}


def main(args: argparse.Namespace) -> int:
    storage = Storage.from_uri(args.output)
    if storage.list():
        raise SystemExit(f"sjd-batch bench-output: {args.output} is not empty: give a fresh output")
    if args.what == "compact":
        result = bench_compact(storage, args.shards, args.rows)
        ok = result["duckdb_count_before"] == result["duckdb_count_after"] == result["expected"]
    else:
        raise SystemExit("resume: not yet")
    result.update(output=args.output, what=args.what)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0 if ok else 1
