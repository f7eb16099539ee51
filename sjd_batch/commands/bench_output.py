"""`sjd-batch bench-output`: time what a big job output costs to resume and to compact, on a
fabricated output of many committed shards (no model runs: the shards' files are written directly).

`--what compact`: `--shards` committed per-shard stats files (`--rows` each); `sjd-batch compact`
merges them; the DuckDB count over the README's dataset must be equal before and after.
`--what resume`: a job of `--shards` one-row shards, every one committed (its marker, and the commit
log a driver writes); times how long a rerun takes to decide what is left (`decide_s`), a whole rerun
(`rerun_s`), and, to compare, one LIST of the markers and the old way (LIST + a GET per marker).
For S3, pass an `s3://bucket/prefix` output (the AWS environment names the endpoint).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sjd_batch.io.backends import open_storage
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


def bench_resume(storage: Storage, shards: int, folder: Path) -> dict[str, Any]:
    """A job of `shards` one-row shards, all committed (markers and the commit log the driver writes),
    then: how long a rerun takes to decide what is left, against listing and reading every marker."""
    from sjd_batch.commands.bench_plan import generate
    from sjd_batch.config import absolute_paths, parse_job
    from sjd_batch.driver import run_local
    from sjd_batch.io import results
    from sjd_batch.io.commit_log import CommitLog, LoggedCommit
    from sjd_batch.job import prepare_job

    [prompts] = generate(folder, 1, shards)
    config = absolute_paths(parse_job({"name": "bench-resume", "model": {"name": "tiny-random"},
                                       "input": {"uris": [str(prompts)], "shard_size": 1},
                                       "output": {"uri": storage.uri}}))
    t0 = time.perf_counter()
    job = prepare_job(config)  # the first run's planning and checks; writes job.json
    log = CommitLog(storage)  # what the driver writes as shards commit
    for spec in job.todo():
        log.add(LoggedCommit(spec.index, 1, 0, 1.0))
    log.flush()
    _markers(storage, shards)
    made = time.perf_counter() - t0
    timings = {"fabricate_s": made}
    for name, call in (("decide_s", lambda: prepare_job(config).todo_count),
                       ("rerun_s", lambda: run_local(config, progress=False).shards_skipped),
                       ("list_markers_s", lambda: len(storage.list("_commits/"))),
                       ("read_every_marker_s", lambda: len(results.committed_shards(storage)))):
        t1 = time.perf_counter()
        timings[name.replace("_s", "_result")] = call()
        timings[name] = time.perf_counter() - t1
    return {"shards": shards, **timings}


def _markers(storage: Storage, shards: int) -> None:
    from sjd_batch.io import results

    def one(shard: int) -> None:
        results.write_commit(storage, shard, {"rows": 1, "errors": 0, "seconds": 1.0})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(shards)))


def main(args: argparse.Namespace) -> int:
    storage = open_storage(args.output)
    if storage.list():
        raise SystemExit(f"sjd-batch bench-output: {args.output} is not empty: give a fresh output")
    if args.what == "compact":
        result = bench_compact(storage, args.shards, args.rows)
        ok = result["duckdb_count_before"] == result["duckdb_count_after"] == result["expected"]
    else:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sjd-bench-resume-") as tmp:
            result = bench_resume(storage, args.shards, Path(tmp))
        ok = result["decide_result"] == 0 and result["rerun_result"] == args.shards
    result.update(output=args.output, what=args.what)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, sort_keys=True))
    return 0 if ok else 1
