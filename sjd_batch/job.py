"""The job-level side of an output, shared by the runner (Ray), `run_local` and `status`.

`prepare_job` checks the model, plans the shards, computes the job id (`sjd_batch.identity`) and claims
the output with `job.json` (with the package versions and git revision that made it); `record_failure`
notes a shard that failed after its retries; `sweep_partials` tidies up partial files of committed
shards. The per-shard work is `worker.ShardWorker`.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from sjd_batch.config import ConfigError, JobConfig, redact_uri
from sjd_batch.identity import identity, job_id
from sjd_batch.io import layout, results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.commit_log import CommitSet, read_log
from sjd_batch.io.shards import ShardPlan, ShardSpec
from sjd_batch.io.storage import Storage, split_uri
from sjd_batch.planning import check_inputs, check_output_outside_inputs, plan_job

if TYPE_CHECKING:
    import numpy as np


def check_model(config: JobConfig) -> None:
    """Fail fast, before any actor starts, on a model or dtype that cannot load.

    A model is a registered name, a local model folder or an `s3://` model prefix.
    """
    from sjd_batch.models.registry import DTYPES, MODELS
    from sjd_batch.models.sources import check_source

    if config.model.dtype not in DTYPES:
        raise ConfigError(f"model.dtype: unknown dtype {config.model.dtype!r}; choose one of "
                          f"{sorted(DTYPES)}")
    name = config.model.name
    try:
        check_source(name, dict(config.model.options))
    except ValueError as e:
        close = [] if name in MODELS else difflib.get_close_matches(name, list(MODELS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"model.name: {e}{hint}") from None


class JobError(RuntimeError):
    """A job that cannot start: its output belongs to another job, or its input changed or is empty."""


@dataclass(frozen=True)
class PreparedJob:
    """A job ready to run: its id, its output, its shard plan and the shards known to be committed.

    `committed` comes from the commit log (`io.commit_log`), not from listing the markers: a rerun of
    100k shards reads a few objects. A committed shard the log missed is run again and found committed
    by its worker (one HEAD). Memory is O(files) for the plan plus a few bytes per committed shard.
    """

    config: JobConfig
    job_id: str
    storage: Storage
    plan: ShardPlan
    committed: CommitSet

    @property
    def todo_count(self) -> int:
        return len(self.plan) - int(self._done.sum())

    @property
    def todo_rows(self) -> int:
        return self.plan.rows - self.plan.rows_of(self.committed.shards)

    def todo(self) -> Iterator[ShardSpec]:
        """The shards left, in plan order, computed as they are taken."""
        done = self._done
        return (self.plan[i] for i in range(len(self.plan)) if not done[i])

    @property
    def _done(self) -> np.ndarray:
        return self.committed.mask(len(self.plan))


def resolve_job_id(config: JobConfig) -> str:
    """The job id (reads the inputs' footers: the id covers their identity)."""
    return job_id(config, plan_job(config).files)


def prepare_job(config: JobConfig) -> PreparedJob:
    """Check the model and the output, plan the shards and claim the output with `job.json`."""
    check_model(config)
    check_output_outside_inputs(config)  # before the output probe writes anything there
    storage = open_storage(config.output.uri)
    # `/`, a folder inside another job's output, a missing bucket, bad credentials or a store that
    # ignores conditional writes fail here, naming the URI, before anything is written
    storage.check_output_root(layout.JOB_FILE)
    plan = plan_job(config)  # footers only; a corrupt one fails here, naming the file
    jid = job_id(config, plan.files)
    existing = _read_manifest(storage)
    if existing is not None:
        _check_owner(storage, jid, identity(config, plan.files), existing)  # before reading any row
    if plan.rows == 0:
        raise JobError(f"input.uris: {list(config.input.uris)} hold no rows: nothing to generate")
    if existing is None:  # first run: the plan is fixed from here on, check the inputs once
        check_inputs(plan, config)
    claim_output(storage, config, jid, plan)
    return PreparedJob(config, jid, storage, plan, read_log(storage))


def claim_output(storage: Storage, config: JobConfig, jid: str, plan: ShardPlan) -> None:
    """Write `job.json`, or check that the one there is this job's (jobs never mix in one output).

    The plan is recorded per input file (`ShardPlan.to_record`), never per shard.
    """
    if not storage.exists(layout.JOB_FILE):
        manifest = {"job_id": jid, "layout_version": layout.LAYOUT_VERSION,
                    "schema_version": results.SCHEMA_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "config": config.to_dict(),
                    "identity": identity(config, plan.files), "versions": package_versions(),
                    "git_revision": git_revision(), "plan": plan.to_record(redact_uri)}
        if storage.write_bytes(layout.JOB_FILE, json.dumps(manifest, indent=2).encode(), if_absent=True):
            return  # else another driver claimed it first: check its claim below
    existing = _read_manifest(storage) or {}
    _check_owner(storage, jid, identity(config, plan.files), existing)
    _check_plan(storage, jid, existing, plan)


def check_claim(storage: Storage, config: JobConfig, plan: ShardPlan) -> bool:
    """What `claim_output` checks, without writing: whether the output holds this job's `job.json`
    (JobError when it holds another job's, or a different plan)."""
    existing = _read_manifest(storage)
    if existing is not None:
        jid = job_id(config, plan.files)
        _check_owner(storage, jid, identity(config, plan.files), existing)
        _check_plan(storage, jid, existing, plan)
    return existing is not None


def _check_plan(storage: Storage, jid: str, existing: dict, plan: ShardPlan) -> None:
    """Same shards as the recorded plan (file names, rows, shard size; not the folders read from)."""
    if "plan" in existing:
        theirs = ShardPlan.from_record(existing["plan"])
        same = _where_free_files(theirs) == _where_free_files(plan) and theirs.shard_size == plan.shard_size
    else:  # a job.json that lists every shard (sjd-batch before the per-file plan)
        mine = [[s.index, s.source, s.row_start, s.row_end] for s in plan]
        same = _where_free(existing.get("shards", [])) == _where_free(mine)
    if not same:
        raise JobError(
            f"the input of job {jid} changed since {storage.join(layout.JOB_FILE)} was written (the shard "
            "plan differs): a job's shards must never change between runs; write to a new output.uri"
        )


def sweep_partials(storage: Storage) -> int:
    """Delete partial files of committed shards: a worker killed between its commit and its own
    clean-up leaves them behind, and a rerun skips that shard. Returns how many were deleted.

    One LIST of `_partial/` (shards in flight only) and one HEAD per shard found there."""
    keys = storage.list(layout.PARTIAL)
    shards = {s for k in keys if (s := layout.shard_of(k)) is not None}
    committed = {s for s in shards if storage.exists(layout.commit_key(s))}
    stale = [k for k in keys if layout.shard_of(k) in committed]
    for key in stale:
        storage.delete(key)
    return len(stale)


def record_failure(storage: Storage, shard: int, error: str, attempts: int) -> None:
    """Note a shard that failed after all its retries; `status` reports it until it commits."""
    body = {"shard": shard, "error": error, "attempts": attempts,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    storage.write_bytes(layout.failure_key(shard), json.dumps(body).encode())


def _where_free_files(plan: ShardPlan) -> list[tuple]:
    return [(split_uri(f.uri)[1], f.rows) for f in plan.files]


def _where_free(plan: list[list]) -> list[tuple]:
    """A shard plan without the inputs' folders: a job read from another folder plans the same shards."""
    return [(index, split_uri(source)[1], start, end) for index, source, start, end in plan]


def _read_manifest(storage: Storage) -> dict | None:
    return json.loads(storage.read_bytes(layout.JOB_FILE)) if storage.exists(layout.JOB_FILE) else None


def _check_owner(storage: Storage, jid: str, mine: dict, existing: dict) -> None:
    """Refuse an output whose job.json is another job's, saying what differs when it can."""
    where, old = storage.join(layout.JOB_FILE), existing.get("job_id")
    version = existing.get("layout_version", 1)
    if version != layout.LAYOUT_VERSION:  # even for the same job id: resuming would mix two layouts
        raise JobError(
            f"{where} was written by another sjd-batch (output layout version {version}; this one writes "
            f"version {layout.LAYOUT_VERSION}: {layout.CHANGES}): it cannot be resumed; choose another "
            "output.uri (its committed shards stay readable)"
        )
    if existing.get("job_id") == jid:
        return
    theirs, mine = existing.get("identity", {}), json.loads(json.dumps(mine))  # JSON types on both sides
    if {**theirs, "inputs": None} == {**mine, "inputs": None}:
        raise JobError(
            f"the input of job {old} changed since {where} was written (file names, sizes or Parquet footers "
            "differ): a job's inputs must never change between runs; write to a new output.uri"
        )
    name = existing.get("config", {}).get("name", "?")
    raise JobError(
        f"{where} belongs to job {old} ({name!r}), not to this job {jid}: jobs never mix in one output; "
        "choose another output.uri"
    )


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine the outputs (read from metadata, nothing imported)."""
    out = {"python": platform.python_version()}
    for name in ("sjd-batch", "torch", "transformers", "ray", "pyarrow", "boto3", "numpy", "pillow"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
    """The commit of the package's checkout (with "-dirty" for local changes); outside git, the
    `SJD_GIT_REVISION` variable (a tree copied without its .git, as onto a lent GPU machine), else None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        rev = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SJD_GIT_REVISION") or None
    return f"{rev}-dirty" if dirty else rev

