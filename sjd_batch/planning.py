"""A job's plan, made before anything runs: input files -> shards, checked once.

`plan_job(config)` lists the inputs, refuses an output folder inside an input prefix, and cuts the files
into shards from their Parquet footers alone (`io.prompts.plan_inputs`, O(files) memory).
`check_inputs(plan, config)` is the once-per-job check of a first run: every file's schema, and the
duplicate-id scan (`io.id_scan`, bounded memory). `sjd-batch plan` runs both and prints the result;
`job.prepare_job` runs them before claiming the output.
"""

from __future__ import annotations

import concurrent.futures as cf

from sjd_batch.config import JobConfig, redact_uri
from sjd_batch.io.id_scan import IdScan, scan_ids
from sjd_batch.io.ids import IdRules
from sjd_batch.io.prompts import InputError, ShardPlan, ShardSpec, expand_inputs, plan_inputs, read_shard
from sjd_batch.io.storage import split_uri


def id_rules(config: JobConfig) -> IdRules:
    """The id rules of the job's output format."""
    return IdRules.for_format(config.output.image_format)


def plan_job(config: JobConfig) -> ShardPlan:
    """The job's shard plan (see the module doc). Raises InputError for unusable inputs."""
    check_output_outside_inputs(config)
    files = expand_inputs(list(config.input.uris))
    return plan_inputs(files, config.input.shard_size, id_rules(config))


def check_inputs(plan: ShardPlan, config: JobConfig, limit: int = 10) -> IdScan:
    """Refuse, before any work, inputs whose schema is wrong (an empty shard of each file reads only
    its footer) or whose ids repeat across shards. Returns what the id scan found."""
    files = [f.uri for f in plan.files]
    with cf.ThreadPoolExecutor(min(16, max(1, len(files)))) as pool:
        list(pool.map(lambda f: read_shard(ShardSpec(index=-1, source=f, row_start=0, row_end=0)), files))
    scan = scan_ids(plan, id_rules(config), limit=limit)
    if scan.duplicates:
        shown = "; ".join(d.describe() for d in scan.duplicates)
        more = f" (the first {limit} found)" if len(scan.duplicates) >= limit else ""
        raise InputError(f"input: these ids occur in more than one shard{more}: {shown}. Every sample "
                         "needs a unique id (it names the image and the stats row); make the `id` values "
                         "unique, or drop the explicit ids that equal generated ones")
    return scan


def check_output_outside_inputs(config: JobConfig) -> None:
    """An output inside an input prefix would read its own stats Parquet files as prompts on a rerun."""
    out = _folder(config.output.uri)
    for uri in config.input.uris:
        if uri.rstrip("/").endswith(".parquet"):
            continue  # a single file: nothing under the output can join it
        prefix = _folder(uri)
        if out == prefix or out.startswith(prefix):
            raise InputError(
                f"output.uri {redact_uri(config.output.uri)} is inside the input prefix {redact_uri(uri)}: "
                "a rerun would read the job's own stats files as prompts; choose an output outside "
                "the input (or list the input files one by one)")


def _folder(uri: str) -> str:
    """A URI as a normalised folder prefix with a trailing slash (local paths made absolute)."""
    parent, name = split_uri(uri)
    return f"{parent.rstrip('/')}/{name}/" if name else f"{parent.rstrip('/')}/"
