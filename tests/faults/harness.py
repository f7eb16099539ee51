"""The fault-injection harness: randomized trials of real jobs, each hit by a fault, then rerun and checked.

A trial (`plan_trial(seed)`) draws, from its seed alone: the backend (a local folder, or a bucket on the
real SeaweedFS server), the image format, how many prompts, the shard and batch sizes, how the driver
runs (`--local`, or on the test's Ray cluster), and one fault:

- `kill-driver`: SIGKILL the driver once the output holds a random number of objects;
- `kill-actor`: SIGKILL one shard actor at such a point (Ray only; the runner retries the shard);
- `s3-outage`: the driver talks to S3 through an `OutageProxy` (seeded failing, resetting, body-cutting
  and slow windows), with botocore allowed 2, 3 or 10 attempts per call;
- `disk-full`: the output is a tmpfs too small for the job (local only; skipped, with the reason,
  where mounting is not allowed), grown back before the rerun;
- `race`: two or three drivers start on the same output at random offsets.

After the fault, the job is rerun (healthy) until it exits 0, and `verify` checks the output: exactly one
stats row and one valid image per input id, each image byte-identical to the uninterrupted reference
run, every shard committed, each shard's dataset file (metadata.jsonl, tar or Parquet file) listing
exactly its samples with their prompts, no partial files left, and no credential in any stdout, stderr,
stored object or file of the trial.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sjd_batch.io import formats, layout, results
from sjd_batch.io.formats import FORMATS
from sjd_batch.io.storage import Storage
from tests.io.test_results import read_tar_shard

FAULTS = ("kill-driver", "kill-actor", "s3-outage", "disk-full", "race")
PROMPT_POOL = 24  # the reference run generates these; a trial takes the first n
MODEL = {"name": "tiny-random"}
METHOD = {"name": "sjd", "window": 8}


@dataclass(frozen=True)
class Trial:
    """One randomized trial, a pure function of its seed (see `plan_trial`)."""

    seed: int
    fault: str
    backend: str  # local | s3
    fmt: str  # png | webdataset | parquet
    prompts: int
    shard_size: int
    batch_size: int
    ray: bool  # the driver joins the test cluster; else `--local`
    kill_after: int  # objects in the output before the kill (kill faults)
    racers: int = 1
    max_attempts: int = 10  # AWS_MAX_ATTEMPTS during an s3 outage
    disk_kb: int = 0  # tmpfs size for disk-full

    def describe(self) -> str:
        return (f"seed {self.seed}: {self.fault} on {self.backend}/{self.fmt}, {self.prompts} prompts, "
                f"shards of {self.shard_size}, batches of {self.batch_size}, "
                f"{'ray' if self.ray else '--local'}")


def plan_trial(seed: int, faults: tuple[str, ...] = FAULTS) -> Trial:
    rng = random.Random(seed)
    fault = faults[seed % len(faults)]  # every fault in turn; the rest is drawn
    backend = {"s3-outage": "s3", "disk-full": "local"}.get(fault, rng.choice(("local", "s3")))
    prompts = rng.randint(6, 16)
    return Trial(
        seed=seed, fault=fault, backend=backend, fmt=rng.choice(FORMATS), prompts=prompts,
        shard_size=rng.randint(2, 5), batch_size=rng.randint(1, 3),
        ray=fault == "kill-actor" or rng.random() < 0.5,
        kill_after=rng.randint(1, prompts), racers=rng.randint(2, 3),
        max_attempts=rng.choice((2, 3, 10)), disk_kb=rng.choice((48, 96, 160)),
    )


def prompt_table(n: int) -> pa.Table:
    return pa.table({"id": [f"p{i:04d}" for i in range(n)],
                     "prompt": [f"a small shape number {i} at top left" for i in range(n)]})


def job_yaml(trial: Trial, inputs: str, output: str) -> str:
    import yaml

    return yaml.safe_dump({
        "name": f"fault-{trial.seed}", "model": MODEL, "method": METHOD,
        "input": {"uris": [inputs], "shard_size": trial.shard_size},
        "output": {"uri": output, "image_format": trial.fmt},
        "run": {"batch_size": trial.batch_size, "num_actors": 2, "max_retries": 2, "upload_threads": 2},
    })


@dataclass
class Outcome:
    """What a trial did, for the report."""

    trial: Trial
    runs: int = 0  # driver processes started, the faulted ones included
    exits: list[int] = field(default_factory=list)
    faults: int = 0  # faults injected (kills, failing windows, a full disk, racing drivers)
    samples: int = 0  # samples verified
    notes: list[str] = field(default_factory=list)


class Driver:
    """One `sjd-batch run` process; its stdout and stderr go to files kept for the credential grep."""

    def __init__(self, job: Path, env: dict[str, str], log: Path, local: bool) -> None:
        cmd = [sys.executable, "-m", "sjd_batch.cli", "run", str(job), "--no-progress"]
        cmd += ["--local"] if local else []
        self.out, self.err = open(f"{log}.out", "wb"), open(f"{log}.err", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.out, stderr=self.err, start_new_session=True)

    def wait(self, timeout: float = 600) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.out.close()
            self.err.close()

    def kill(self) -> None:
        """SIGKILL the driver's whole session: in `--local` mode that is the job itself."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def objects(storage: Storage) -> int:
    try:
        return len(storage.list())
    except Exception:  # noqa: BLE001 - the store may be failing on purpose; try again later
        return 0


def wait_for_objects(storage: Storage, n: int, driver: Driver, timeout: float = 300) -> bool:
    """Wait until the output holds `n` objects (or the driver ended); whether the point was reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if objects(storage) >= n:
            return True
        if driver.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def kill_one_actor(ours: int) -> bool:
    """SIGKILL one process that runs a shard actor (`ray::_ShardActor`) and descends from pid `ours`."""
    for pid in sorted(os.listdir("/proc")):
        if not pid.isdigit():
            continue
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::_ShardActor") and _descends_from(int(pid), ours):
            os.kill(int(pid), signal.SIGKILL)
            return True
    return False


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == ancestor:
            return True
    return False


def reference_digests(storage: Storage) -> dict[str, str]:
    """sample id -> sha256 of its image, from an uninterrupted PNG run of the prompt pool."""
    table = results.read_stats(storage)
    return {r["sample_id"]: hashlib.sha256(storage.read_bytes(r["image_key"])).hexdigest()
            for r in table.select(["sample_id", "image_key"]).to_pylist()}


def image_bytes(storage: Storage, key: str, packs: dict[str, dict[str, bytes]]) -> bytes:
    """A stats row's image: a PNG object, or a member of a shard's tar or Parquet file (`key#member`)."""
    pack, member = layout.split_image_ref(key)
    if member is None:
        return storage.read_bytes(key)
    if pack not in packs:
        packs[pack] = formats.read_packed(pack, storage.read_bytes(pack))
    return packs[pack][member]


def verify(storage: Storage, trial: Trial, reference: dict[str, str]) -> int:
    """The trial's invariants (see the module doc); returns the samples checked."""
    from PIL import Image

    table = results.read_stats(storage)
    ids = table.column("sample_id").to_pylist()
    expected = {f"p{i:04d}" for i in range(trial.prompts)}
    assert len(ids) == len(set(ids)), f"{trial.describe()}: duplicate stats rows"
    assert set(ids) == expected, f"{trial.describe()}: lost {sorted(expected - set(ids))}"
    shards = -(-trial.prompts // trial.shard_size)
    assert len(results.committed_shards(storage)) == shards, f"{trial.describe()}: uncommitted shards"
    packs: dict[str, Any] = {}
    for row in table.select(["sample_id", "image_key"]).to_pylist():
        data = image_bytes(storage, row["image_key"], packs)
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # a valid PNG, not a truncated one
        digest = hashlib.sha256(data).hexdigest()
        assert digest == reference[row["sample_id"]], f"{trial.describe()}: {row['sample_id']} differs"
    keys = storage.list()
    assert not [k for k in keys if k.startswith("_partial")], f"{trial.describe()}: partial files left"
    check_dataset_files(storage, trial, table, shards, set(keys))
    return len(ids)


def check_dataset_files(storage: Storage, trial: Trial, table: pa.Table, shards: int, keys: set[str]) -> None:
    """Each shard's metadata.jsonl (png) or packed file lists exactly its samples, with their prompts,
    and `images/` holds nothing else."""
    import json

    images = {k for k in keys if k.startswith(layout.IMAGES)}
    rows = table.select(["sample_id", "prompt", "shard", "image_key"]).to_pylist()
    if trial.fmt == "png":
        wanted = {r["image_key"] for r in rows} | {layout.metadata_key(s) for s in range(shards)}
    else:
        wanted = {layout.pack_key(s, trial.fmt) for s in range(shards)}
    assert images == wanted, f"{trial.describe()}: images/ holds {sorted(images ^ wanted)} (stray or missing)"
    for s in range(shards):
        mine = sorted((r["sample_id"], r["prompt"]) for r in rows if r["shard"] == s)
        key = layout.metadata_key(s) if trial.fmt == "png" else layout.pack_key(s, trial.fmt)
        data = storage.read_bytes(key)
        if trial.fmt == "png":
            lines = [json.loads(line) for line in data.splitlines()]
            found = [(line["sample_id"], line["text"]) for line in lines]
            assert all(line["file_name"] == f"{line['sample_id']}.png" for line in lines)
        elif trial.fmt == "webdataset":
            found = [(sid, m["txt"].decode()) for sid, m in read_tar_shard(data).items()]
        else:
            packed = pq.read_table(io.BytesIO(data), columns=["sample_id", "text"]).to_pylist()
            found = [(r["sample_id"], r["text"]) for r in packed]
        assert sorted(found) == mine, f"{trial.describe()}: {key} does not list exactly the shard's samples"


def leaked(secret: str, storage: Storage, folder: Path) -> list[str]:
    """Where `secret` appears: stored objects of the output, and every file under `folder` (logs)."""
    raw = secret.encode()
    found = [storage.join(k) for k in storage.list() if raw in storage.read_bytes(k)]
    return found + [str(p) for p in folder.rglob("*") if p.is_file() and raw in p.read_bytes()]


def write_prompts(storage: Storage, key: str, n: int) -> str:
    sink = io.BytesIO()
    pq.write_table(prompt_table(n), sink)
    storage.write_bytes(key, sink.getvalue())
    return storage.join(key)


def start_watchdog(stop: threading.Event, action: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=action, args=(stop, *args), daemon=True)
    thread.start()
    return thread
