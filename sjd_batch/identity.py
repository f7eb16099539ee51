"""The job id: 16 hex digits of blake2b over what the job produces, and nothing else.

In it: the model (name, dtype, device, loader options, compile), the method as the engine runs it (the
resolved `DecodeConfig`), the sampling settings of the job file, the job seed, the shard size and the
image format (they fix the output's layout), and the inputs' identity: each file's name, size and
Parquet-footer digest, in plan order (`io.shards.InputFile`, read while planning). The footer holds the
schema, the row count, every row group's byte ranges and column statistics, so rewriting a file almost
always changes it.

Not in it: how the job is executed (`run.batch_size`, actors, GPUs, CPUs, retries, upload threads), the
job's name, where the output goes, and the folders the inputs were read from. So a job can be resumed
with another batch size, on another cluster, or from `ray job submit`'s temporary working directory;
but never with settings that change its images into the same output (`job.claim_output` refuses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Sequence

from sjd_batch.config import JobConfig
from sjd_batch.io.shards import InputFile
from sjd_batch.io.storage import split_uri


def identity(config: JobConfig, inputs: Sequence[InputFile]) -> dict[str, Any]:
    """What the job id hashes (also stored in job.json, so a reader can see why two ids differ)."""
    return {
        "model": config.model.model_dump(),
        "method": {**dataclasses.asdict(config.method.decode_config()),
                   # auto: the window each actor picks, which changes what a sample's tokens are
                   **({"window": "auto"} if config.method.window == "auto" else {})},
        "sampling": config.sampling.model_dump(exclude_none=True),
        "seed": config.run.seed,
        "shard_size": config.input.shard_size,
        "image_format": config.output.image_format,
        "inputs": [{"name": split_uri(f.uri)[1], "size": f.size, "footer": f.footer} for f in inputs],
    }


def job_id(config: JobConfig, inputs: Sequence[InputFile]) -> str:
    """A stable id of what the job produces (see the module docstring)."""
    blob = json.dumps(identity(config, inputs), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.blake2b(blob, digest_size=8).hexdigest()
