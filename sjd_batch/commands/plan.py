"""`sjd-batch plan JOB.yaml [--set key.sub=value ...]`: the job's plan, without running anything.

Prints the input files, rows and shards, what the output already holds (committed shards and rows),
what is left, and an estimate of the time left at the images/s measured on the committed shards. On a
job that has not started yet it also runs the checks a first run runs (every file's schema, ids
unique across shards, in bounded memory), so a bad input is found before any GPU is booked.
Exits 0 when the job can run, 2 when it could not start (the same errors as `sjd-batch run`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sjd_batch.config import ConfigError, JobConfig, load_job, redact_uri
from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import StorageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job YAML")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="override a job key, as in `sjd-batch run` (repeatable)")
    parser.add_argument("--check-ids", action="store_true",
                        help="scan the ids even when the job has started (its first run did)")
    parser.add_argument("--verify", action="store_true",
                        help="list the commit markers and repair the commit log where it disagrees")
    parser.add_argument("--json", action="store_true", help="print JSON")


@dataclass
class PlanReport:
    """What `sjd-batch plan` prints."""

    job_id: str
    name: str
    output: str
    files: int
    rows: int
    shard_size: int
    shards: int
    started: bool = False  # the output holds this job's job.json
    committed_shards: int = 0
    committed_rows: int = 0  # input rows of committed shards (samples + skipped rows)
    left_shards: int = 0
    left_rows: int = 0
    ids: dict[str, Any] | None = None  # the id scan's figures, when it ran
    verified: dict[str, int] | None = None  # --verify: shards the log lacked / named without a marker
    images_per_s: float | None = None  # per actor, measured on the committed shards
    estimate_s: float | None = None  # the rows left at that rate, on run.num_actors actors
    seconds: dict[str, float] = field(default_factory=dict)  # where planning spent its time


def make_report(config: JobConfig, check_ids: bool = False, verify: bool = False) -> PlanReport:
    """Plan the job and read what its output holds; raises what `sjd-batch run` would raise.

    What is committed comes from the commit log (a few objects, `io.commit_log`); with `verify`, the
    markers are listed first and the log is repaired to match them.
    """
    from sjd_batch.identity import job_id
    from sjd_batch.io.commit_log import CommitSet, read_log, reconcile
    from sjd_batch.job import check_claim
    from sjd_batch.planning import check_inputs, plan_job

    t0 = time.perf_counter()
    storage = open_storage(config.output.uri)
    storage.check_bucket()
    plan = plan_job(config)
    started = check_claim(storage, config, plan)
    report = PlanReport(job_id(config, plan.files), config.name, redact_uri(config.output.uri),
                        len(plan.files), plan.rows, plan.shard_size, len(plan), started=started)
    report.seconds["plan"] = time.perf_counter() - t0
    if not started or check_ids:
        t1 = time.perf_counter()
        scan = check_inputs(plan, config)
        report.ids = {"checked": scan.ids, "unusable": scan.unusable, "partitions": scan.partitions,
                      "spilled_bytes": scan.spilled_bytes}
        report.seconds["ids"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    if started and verify:
        missing, stale = reconcile(storage)
        report.verified = {"missing_from_log": len(missing), "not_committed": len(stale)}
    committed = read_log(storage) if started else CommitSet.of([])
    report.seconds["committed"] = time.perf_counter() - t2
    _fill_progress(report, plan, committed, config.run.num_actors)
    return report


def _fill_progress(report: PlanReport, plan: Any, committed: Any, actors: int) -> None:
    done = committed.mask(len(plan))
    report.committed_shards = int(done.sum())
    report.committed_rows = plan.rows_of(committed.shards)
    report.left_shards = len(plan) - report.committed_shards
    report.left_rows = plan.rows - report.committed_rows
    samples, busy = int(committed.rows.sum()), float(committed.seconds.sum())
    if samples and busy > 0:
        report.images_per_s = samples / busy
        report.estimate_s = report.left_rows / report.images_per_s / max(1, actors)


def text(r: PlanReport) -> str:
    lines = [
        f"job {r.name!r} (id {r.job_id}) -> {r.output}",
        f"  input: {r.files} file(s), {r.rows:,} rows, shards of {r.shard_size} -> {r.shards:,} shards",
    ]
    if r.ids is not None:
        ids = r.ids
        lines.append(f"  ids: {ids['checked']:,} checked, none repeated across shards; {ids['unusable']:,} "
                     f"unusable (those rows will be skipped with their reason) "
                     f"[{r.seconds.get('ids', 0):.1f} s, {ids['partitions']} spill partition(s)]")
    if r.verified is not None:
        lines.append(f"  commit log verified against the markers: {r.verified['missing_from_log']} committed "
                     f"shard(s) added, {r.verified['not_committed']} without a marker removed")
    if not r.started:
        lines.append("  output: not started")
    else:
        lines.append(f"  output: {r.committed_shards:,} of {r.shards:,} shards committed "
                     f"({r.committed_rows:,} rows); left: {r.left_shards:,} shards, {r.left_rows:,} rows")
    if r.started and not r.left_rows:
        lines.append("  nothing left: every shard is committed")
    elif r.estimate_s is not None:
        lines.append(f"  estimate: {r.images_per_s:.2f} images/s per actor (measured on the committed "
                     f"shards) -> {_duration(r.estimate_s)} for the rows left, on run.num_actors actors")
    elif r.left_rows:
        lines.append("  estimate: no images/s measured yet (no committed shard): run the job, or a few "
                     "shards of it, then plan again")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def main(args: argparse.Namespace) -> int:
    from sjd_batch.job import JobError

    try:
        config = load_job(args.job, args.overrides)
        report = make_report(config, check_ids=args.check_ids, verify=args.verify)
    except (ConfigError, JobError, StorageError) as e:
        print(f"sjd-batch plan: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(asdict(report), indent=2, sort_keys=True) if args.json else text(report))
    return 0
