"""`sjd-batch run JOB.yaml [--set key.sub=value ...]`: run or resume a job.

Starts an embedded local Ray, or joins the cluster in `RAY_ADDRESS`; `--local` runs in this process
without Ray. Exits 0 when every shard is committed, 1 when some shard failed after its retries, 2 when
the job could not start (bad config, output owned by another job, unreadable input or storage).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from sjd_batch.config import ConfigError, load_job
from sjd_batch.io.storage import StorageError, redact_uri


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job YAML (see jobs/demo.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE",
                        help="override a job key, e.g. --set run.num_actors=4 (repeatable)")
    parser.add_argument("--local", action="store_true", help="run in this process, without Ray")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.job import JobError

    if args.local:
        from sjd_batch.driver import run_local as run
    else:
        from sjd_batch.runner import run_job as run
    try:
        config = load_job(args.job, args.overrides)
        print(f"job {config.name!r}: output {redact_uri(config.output.uri)}", file=sys.stderr)
        summary = run(config, progress=not args.no_progress)
    except (ConfigError, JobError, StorageError) as e:
        print(f"sjd-batch run: error: {e}", file=sys.stderr)
        return 2
    print(summary.text(_command(args)))
    return 0 if summary.ok else 1


def _command(args: argparse.Namespace) -> str:
    """This run's command line, for the summary's next step (`--set` values may hold no credential:
    load_job refuses a URI that carries one)."""
    sets = [a for override in args.overrides for a in ("--set", override)]
    return shlex.join(["sjd-batch", "run", args.job, *(["--local"] if args.local else []), *sets])
