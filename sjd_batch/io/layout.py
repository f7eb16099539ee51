"""Every key and file name of a job's output: the one module that knows the layout.

Layout version 2, under the output root (every key is a pure function of the job and the sample, so a
retry rewrites the same objects and never adds new ones):

    <output>/
    ├── job.json                                        the job: id, config, identity, shard plan, versions
    ├── images/shard=00003/<sample_id>.png              image_format png: one PNG per sample
    ├── images/shard-00003.tar                          image_format webdataset: one tar per shard
    │     ├── <sample_id>.png                             its members, grouped by the name up to the dot
    │     └── <sample_id>.json
    ├── stats/job_id=<id>/shard=00003/part-0.parquet    one stats row per sample (hive partitions)
    ├── errors/job_id=<id>/shard=00003/part-0.parquet   skipped input rows and their reason
    ├── _commits/shard=00003.json                       commit marker: written last, create-only
    ├── _partial/shard=00003/rows-000000000012.json     stats records of finished samples (from row 12)
    ├── _partial/shard=00003/<quoted id>.png            webdataset: a sample's PNG until its tar is packed
    └── _failures/shard=00003.json                      a shard that failed after all its retries

A shard's outputs count only once its commit marker exists. `_partial/` holds the progress of shards
not committed yet (sample-level resume) and is deleted once they are; `_failures/` is for `status`.
Shard numbers are five digits everywhere (wider numbers simply grow). Version 1 (before the job id
covered the inputs' identity) named partial folders `_partial/000003/`; job.json records the version.
"""

from __future__ import annotations

import re
import urllib.parse

LAYOUT_VERSION = 2

JOB_FILE = "job.json"
IMAGES = "images/"
STATS = "stats/"
ERRORS = "errors/"
COMMITS = "_commits/"
PARTIAL = "_partial/"
FAILURES = "_failures/"

_SHARD = re.compile(r"shard[=-](\d+)")


def _shard(shard: int) -> str:
    return f"shard={shard:05d}"


def image_key(shard: int, sample_id: str, fmt: str = "png") -> str:
    """One sample's image: `images/shard=00003/<sample_id>.png`."""
    return f"{IMAGES}{_shard(shard)}/{sample_id}.{fmt}"


def tar_key(shard: int) -> str:
    """A shard's WebDataset tar: `images/shard-00003.tar` (brace-expandable by webdataset)."""
    return f"{IMAGES}shard-{shard:05d}.tar"


def tar_member(sample_id: str, ext: str) -> str:
    """A member of a shard's tar: `<sample_id>.<ext>`."""
    return f"{sample_id}.{ext}"


def tar_image_ref(shard: int, sample_id: str, fmt: str = "png") -> str:
    """What the stats `image_key` holds for a sample stored in a tar: `<tar key>#<member>`."""
    return f"{tar_key(shard)}#{tar_member(sample_id, fmt)}"


def stats_key(job_id: str, shard: int) -> str:
    """A shard's stats file (hive partitions `job_id`, `shard`)."""
    return f"{STATS}job_id={job_id}/{_shard(shard)}/part-0.parquet"


def errors_key(job_id: str, shard: int) -> str:
    """A shard's skipped-input-rows file (same partitions as the stats)."""
    return f"{ERRORS}job_id={job_id}/{_shard(shard)}/part-0.parquet"


def commit_key(shard: int) -> str:
    """A shard's commit marker."""
    return f"{COMMITS}{_shard(shard)}.json"


def partial_folder(shard: int) -> str:
    """The folder of an uncommitted shard's progress (list it, then delete it after the commit)."""
    return f"{PARTIAL}{_shard(shard)}/"


def partial_records_key(shard: int, first_row: int) -> str:
    """The stats records of a group of finished samples, named by the input row of the first one."""
    return f"{partial_folder(shard)}rows-{first_row:012d}.json"


def is_partial_records(key: str) -> bool:
    return key.startswith(PARTIAL) and key.endswith(".json")


def partial_image_key(shard: int, sample_id: str, fmt: str = "png") -> str:
    """A webdataset sample's image before its shard's tar is packed (the id quoted: it is one name)."""
    return f"{partial_folder(shard)}{urllib.parse.quote(sample_id, safe='')}.{fmt}"


def failure_key(shard: int) -> str:
    """The record of a shard that failed after all its retries (for `status`)."""
    return f"{FAILURES}{_shard(shard)}.json"


def shard_of(key: str) -> int | None:
    """The shard number a key belongs to (`stats/job_id=a/shard=00012/...` -> 12), or None."""
    found = _SHARD.search(key)
    return int(found.group(1)) if found else None
