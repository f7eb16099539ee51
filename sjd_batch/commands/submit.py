"""`sjd-batch submit JOB.yaml --address http://HEAD:8265 [--set k=v ...] [--follow]`.

Submits `sjd-batch run` to a Ray cluster through the Ray Jobs API. The runtime environment ships the
*resolved* job (overrides applied, local paths made absolute) as the working directory, so the driver
runs exactly the job validated here. The submission id is `sjd-<job_id>`: resubmitting the same job
is refused instead of starting a second copy (pass `--suffix` to resubmit, e.g. after a failure).
Credentials are never shipped: the cluster needs its own (runtime_env is stored in Ray's job table);
only the non-secret S3 endpoint and region variables are forwarded, and a job whose URIs carry a
credential is refused.

Actors are sized from the cluster before submitting: the resources of its alive nodes (Ray's state
API, through the same dashboard) say how many actors of `run.cpus_per_actor` CPU and
`run.gpus_per_actor` GPU fit at once, each on one node, with the driver's `--entrypoint-num-cpus` taken
from the head. The shipped job asks for that many when fewer than `run.num_actors` fit (the runner
would start no more), and the command says so; none fitting is an error, before anything is submitted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

from sjd_batch.config import ConfigError, JobConfig, load_job
from sjd_batch.io.storage import StorageError, check_uri

FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")
Node = tuple[bool, dict[str, float]]  # (is the head node, total resources)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", help="the job YAML")
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8265"),
                        help="the Ray dashboard address (default: $RAY_API_SERVER_ADDRESS or %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.SUB=VALUE")
    parser.add_argument("--suffix", default="", help="appended to the submission id (to resubmit a job)")
    parser.add_argument("--follow", action="store_true", help="stream the driver's logs until the job ends")
    parser.add_argument("--entrypoint-num-cpus", type=float, default=0.0,
                        help="CPUs reserved for the driver on the head (default 0: it mostly waits, and a "
                             "reservation can cost an actor on a small cluster)")


def actors_that_fit(nodes: list[Node], cpus: float, gpus: float, driver_cpus: float) -> int | None:
    """How many actors of (`cpus`, `gpus`) fit at once, each within one node, the driver's CPUs taken
    from the head; None when an actor needs no resource at all (any number fits)."""
    if cpus <= 0 and gpus <= 0:
        return None
    total = 0
    for is_head, res in nodes:
        free = {"CPU": res.get("CPU", 0.0) - (driver_cpus if is_head else 0.0), "GPU": res.get("GPU", 0.0)}
        # rounded first: Ray counts resources in 1/10000 units, and 1.9 / 0.95 must be 2, not 1.999...
        needs = [(k, need) for k, need in (("CPU", cpus), ("GPU", gpus)) if need > 0]
        total += min(max(0, math.floor(round(free[k] / need, 4))) for k, need in needs)
    return total


def size_job(config: JobConfig, nodes: list[Node], driver_cpus: float) -> tuple[JobConfig, str]:
    """The job with `run.num_actors` lowered to what fits now, and a line that says why."""
    run = config.run
    cpu = sum(r.get("CPU", 0.0) for _, r in nodes)
    gpu = sum(r.get("GPU", 0.0) for _, r in nodes)
    have = (f"the cluster has {len(nodes)} node(s), {cpu:g} CPU, {gpu:g} GPU; an actor needs "
            f"{run.cpus_per_actor:g} CPU and {run.gpus_per_actor:g} GPU on one node, the driver "
            f"{driver_cpus:g} CPU on the head")
    fits = actors_that_fit(nodes, run.cpus_per_actor, run.gpus_per_actor, driver_cpus)
    if fits == 0:
        raise ConfigError(f"no actor fits: {have}; lower run.cpus_per_actor / run.gpus_per_actor or "
                          "--entrypoint-num-cpus, or add nodes")
    if fits is None or fits >= run.num_actors:
        return config, f"{have}: {run.num_actors} actor(s) as asked"
    sized = config.model_copy(update={"run": run.model_copy(update={"num_actors": fits})})
    return sized, (f"{have}: {fits} actor(s) fit, not run.num_actors={run.num_actors}; submitting "
                   f"{fits} (lower run.cpus_per_actor or add nodes to run more)")


def main(args: argparse.Namespace) -> int:
    from sjd_batch.job import resolve_job_id
    from sjd_batch.runner import SubmitError, cluster_nodes, follow_job, submit_job

    try:
        config = load_job(args.job, args.overrides)
        for uri in (*config.input.uris, config.output.uri, config.model.name):
            check_uri(uri)  # the job file is shipped to the cluster: never with a credential in it
        config, sizing = size_job(config, cluster_nodes(args.address), args.entrypoint_num_cpus)
        print(sizing, file=sys.stderr)
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
