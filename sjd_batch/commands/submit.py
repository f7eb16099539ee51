"""`sjd-batch submit JOB.yaml --address http://HEAD:8265 [--set k=v ...] [--follow]`.

Submits `sjd-batch run` to a Ray cluster through the Ray Jobs API. The runtime environment ships the
*resolved* job (overrides applied, local paths made absolute) as the working directory, so the driver
runs exactly the job validated here. The submission id is `sjd-<job_id>`: resubmitting the same job
is refused instead of starting a second copy (pass `--suffix` to resubmit, e.g. after a failure).
Credentials are never shipped: the cluster needs its own (runtime_env is stored in Ray's job table);
only the non-secret S3 endpoint and region variables are forwarded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from sjd_batch.config import ConfigError, load_job
from sjd_batch.io.storage import StorageError, check_uri

FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job YAML")
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                        help="the Ray dashboard address (default: $RAY_API_SERVER_ADDRESS or %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--suffix", default="", help="appended to the submission id (to resubmit a job)")
    parser.add_argument("--follow", action="store_true", help="stream the driver's logs until the job ends")
    parser.add_argument("--entrypoint-num-cpus", type=float, default=0.1, help="CPUs held by the driver")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.job import resolve_job_id
    from sjd_batch.runner import SubmitError, follow_job, submit_job

    try:
        config = load_job(args.job, args.overrides)
        for uri in (*config.input.uris, config.output.uri, config.model.name):
            check_uri(uri)  # the job file is shipped to the cluster: never with a credential in it
        job_id = resolve_job_id(config)  # reads the inputs' footers: the id covers their identity
        submission_id = f"sjd-{job_id}" + (f"-{args.suffix}" if args.suffix else "")
        with tempfile.TemporaryDirectory(prefix="sjd-submit-") as workdir:
            Path(workdir, "job.yaml").write_text(config.to_yaml(), encoding="utf-8")
            env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
            submit_job(
                args.address, submission_id, entrypoint="sjd-batch run job.yaml --no-progress",
                runtime_env={"working_dir": workdir, "env_vars": env},
                entrypoint_num_cpus=args.entrypoint_num_cpus,
                metadata={"sjd_job_id": job_id, "sjd_job_name": config.name},
            )
        print(submission_id)
        print(f"job {config.name!r} ({job_id}) submitted to {args.address}", file=sys.stderr)
        return follow_job(args.address, submission_id, sys.stdout) if args.follow else 0
    except (ConfigError, StorageError, SubmitError) as e:
        print(f"sjd-batch submit: error: {e}", file=sys.stderr)
        return 2
