"""Every key and file name of a job's output: the one module that knows the layout.

Layout version 3, under the output root (every key is a pure function of the job and the sample, so a
retry rewrites the same objects and never adds new ones):

    <output>/
    ├── job.json                                        the job: id, config, identity, shard plan, versions
    ├── images/shard=00003/<sample_id>.png              image_format png: one PNG per sample
    ├── images/shard=00003/metadata.jsonl                 and one line per image (file_name, text, stats)
    ├── images/shard-00003.tar                          image_format webdataset: one tar per shard
    │     ├── <sample_id>.png                             its members, grouped by the name up to the dot
    │     ├── <sample_id>.txt                             the prompt
    │     └── <sample_id>.json                            id, seed, model, method, statistics
    ├── images/shard-00003.parquet                      image_format parquet: one file per shard (image
    │                                                     bytes, text, statistics; io/formats.py)
    ├── stats/job_id=<id>/shard=00003/part-0.parquet    one stats row per sample (hive partitions)
    ├── stats/_compacted/g000002-<run>/job_id=<id>/part-00000.parquet   after `sjd-batch compact`: many
    │                                                     shards per file (`shard` is a column)
    ├── stats/_manifest/00000002.json                   which compacted files are current (io/compaction.py)
    ├── errors/job_id=<id>/shard=00003/part-0.parquet   skipped input rows and their reason (and errors/
    │                                                     _compacted/, errors/_manifest/ likewise)
    ├── _commits/shard=00003.json                       commit marker: written last, create-only
    ├── _commitlog/part-<run>-000001.parquet            the committed shards a driver saw (io/commit_log.py)
    ├── _partial/shard=00003/rows-000000000012.json     stats records of finished samples (from row 12)
    ├── _partial/shard=00003/row-000000000012.png       webdataset, parquet: a sample's PNG (by its input
    │                                                     row) until the shard's tar or Parquet file is packed
    └── _failures/shard=00003.json                      a shard that failed after all its retries

A shard's outputs count only once its commit marker exists. `_partial/` holds the progress of shards
not committed yet (sample-level resume) and is deleted once they are; `_failures/` is for `status`.
Shard numbers are five digits everywhere (wider numbers simply grow). Version 1 (before the job id
covered the inputs' identity) named partial folders `_partial/000003/`; version 2 had no metadata.jsonl,
no `.txt` tar members, no parquet format, and named staged PNGs by their quoted sample id (which a
non-ASCII id could make longer than a file name may be). job.json records the version.
"""

from __future__ import annotations

import re

LAYOUT_VERSION = 3
CHANGES = "version 3 added png shards' metadata.jsonl, tars' .txt members and the parquet format"

JOB_FILE = "job.json"
IMAGES = "images/"
STATS = "stats/"
ERRORS = "errors/"
COMMITS = "_commits/"
PARTIAL = "_partial/"
COMMIT_LOG = "_commitlog/"
FAILURES = "_failures/"

COMPACTED = "_compacted"
MANIFESTS = "_manifest"

_SHARD = re.compile(r"shard[=-](\d+)")
_PER_SHARD_FILE = re.compile(r"^[^/]+/job_id=([^/]+)/shard=(\d+)/part-0\.parquet$")


def _shard(shard: int) -> str:
    return f"shard={shard:05d}"


def image_name(sample_id: str, fmt: str = "png") -> str:
    """A sample's image file name: `<sample_id>.png` (in its shard folder, or as a packed member)."""
    return f"{sample_id}.{fmt}"


def image_key(shard: int, sample_id: str, fmt: str = "png") -> str:
    """One sample's image: `images/shard=00003/<sample_id>.png`."""
    return f"{IMAGES}{_shard(shard)}/{image_name(sample_id, fmt)}"


def metadata_key(shard: int) -> str:
    """A png shard's `metadata.jsonl`, beside its images (what `datasets`' imagefolder reads)."""
    return f"{IMAGES}{_shard(shard)}/metadata.jsonl"


_PACK_EXT = {"webdataset": "tar", "parquet": "parquet"}
_PACK_REF = re.compile(r"^(images/shard-\d+\.(?:tar|parquet))#(.+)$")


def pack_key(shard: int, fmt: str) -> str:
    """A packed format's object for one shard: `images/shard-00003.tar` (webdataset) or
    `images/shard-00003.parquet` (brace-expandable: `shard-{00000..00099}.tar`)."""
    return f"{IMAGES}shard-{shard:05d}.{_PACK_EXT[fmt]}"


def tar_member(sample_id: str, ext: str) -> str:
    """A member of a shard's tar: `<sample_id>.<ext>`."""
    return f"{sample_id}.{ext}"


def image_ref(shard: int, sample_id: str, fmt: str) -> str:
    """What the stats `image_key` holds: the PNG's key, or `<packed object's key>#<sample_id>.png`."""
    if fmt not in _PACK_EXT:
        return image_key(shard, sample_id)
    return f"{pack_key(shard, fmt)}#{image_name(sample_id)}"


def split_image_ref(ref: str) -> tuple[str, str | None]:
    """A stats `image_key` -> (the object's key, the packed member or None): the inverse of `image_ref`
    (a png sample's id may itself hold a `#`)."""
    found = _PACK_REF.match(ref)
    return (found.group(1), found.group(2)) if found else (ref, None)


def stats_key(job_id: str, shard: int) -> str:
    """A shard's stats file (hive partitions `job_id`, `shard`)."""
    return f"{STATS}job_id={job_id}/{_shard(shard)}/part-0.parquet"


def errors_key(job_id: str, shard: int) -> str:
    """A shard's skipped-input-rows file (same partitions as the stats)."""
    return f"{ERRORS}job_id={job_id}/{_shard(shard)}/part-0.parquet"


def commit_key(shard: int) -> str:
    """A shard's commit marker."""
    return f"{COMMITS}{_shard(shard)}.json"


def commit_log_part(run: str, seq: int) -> str:
    """One part of the commit log, written by the driver of run `run` (io/commit_log.py)."""
    return f"{COMMIT_LOG}part-{run}-{seq:06d}.parquet"


def commit_log_merged(run: str) -> str:
    """The union of earlier parts of the commit log, written by run `run`."""
    return f"{COMMIT_LOG}merged-{run}.parquet"


def partial_folder(shard: int) -> str:
    """The folder of an uncommitted shard's progress (list it, then delete it after the commit)."""
    return f"{PARTIAL}{_shard(shard)}/"


def partial_records_key(shard: int, first_row: int) -> str:
    """The stats records of a group of finished samples, named by the input row of the first one."""
    return f"{partial_folder(shard)}rows-{first_row:012d}.json"


def is_partial_records(key: str) -> bool:
    return key.startswith(PARTIAL) and key.endswith(".json")


def partial_image_key(shard: int, row: int) -> str:
    """A packed format's sample PNG before its shard is packed, named by the sample's input row (short
    and unique in the shard, whatever the id)."""
    return f"{partial_folder(shard)}row-{row:012d}.png"


def failure_key(shard: int) -> str:
    """The record of a shard that failed after all its retries (for `status`)."""
    return f"{FAILURES}{_shard(shard)}.json"


def per_shard_file(key: str) -> tuple[str, int] | None:
    """(job id, shard) of a worker-written stats or errors file (`stats/job_id=a/shard=00012/part-0.parquet`),
    or None for any other key (compacted files included)."""
    found = _PER_SHARD_FILE.match(key)
    return (found.group(1), int(found.group(2))) if found else None


def compacted_folder(folder: str, generation: int, run: str) -> str:
    """Where one compaction of `folder` (`stats` or `errors`) writes: one folder per generation and run."""
    return f"{folder}/{COMPACTED}/g{generation:06d}-{run}"


def compacted_generation(folder: str, key: str) -> int:
    """The generation of a key under `folder`'s compacted files (0 for any other key)."""
    prefix = f"{folder}/{COMPACTED}/g"
    return int(key[len(prefix) : len(prefix) + 6]) if key.startswith(prefix) else 0


def compacted_file(base: str, job_id: str, index: int) -> str:
    """The `index`-th file of a compaction writing under `base` (`compacted_folder`)."""
    return f"{base}/job_id={job_id}/part-{index:05d}.parquet"


def manifest_folder(folder: str) -> str:
    return f"{folder}/{MANIFESTS}/"


def manifest_key(folder: str, generation: int) -> str:
    """The compaction manifest of one generation (zero-padded: the newest sorts last)."""
    return f"{manifest_folder(folder)}{generation:08d}.json"


def shard_of(key: str) -> int | None:
    """The shard number a key belongs to (`stats/job_id=a/shard=00012/...` -> 12), or None."""
    found = _SHARD.search(key)
    return int(found.group(1)) if found else None
