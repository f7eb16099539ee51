"""ShardWorker end to end, with no Ray: a local folder and a real S3 server (SeaweedFS), exactly-once
reruns, sample-level resume after a crash mid-shard, bad rows, and WebDataset tars.

The helpers at the top (`write_prompts`, `make_job`, `check_output`, `digest`) are shared with
`test_runner.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sjd_batch.config import JobConfig, absolute_paths, parse_job
from sjd_batch.io import layout, results
from sjd_batch.io.backends import open_storage
from sjd_batch.io.prompts import expand_inputs, plan_inputs
from sjd_batch.io.storage import Storage
from sjd_batch.io.storage_local import LocalStorage
from sjd_batch.job import JobError, prepare_job, resolve_job_id, sweep_partials
from sjd_batch.worker import ShardWorker
from tests.io.test_results import decode_png, read_tar_shard


def prompt_table(n: int, start: int = 0, **extra: list[Any]) -> pa.Table:
    rows = range(start, start + n)
    return pa.table({"id": [f"p{i:04d}" for i in rows],
                     "prompt": [f"a small red circle at top left number {i}" for i in rows], **extra})


def write_prompts(path: Path, table: pa.Table | int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(prompt_table(table) if isinstance(table, int) else table, path)
    return str(path)


def make_job(inputs: list[str], out: str, **sections: dict[str, Any]) -> JobConfig:
    """A tiny-random job: shards of 4, batches of 2, 1 actor unless overridden."""
    raw: dict[str, Any] = {
        "name": "test",
        "model": {"name": "tiny-random"},
        "method": {"name": "sjd", "window": 8},
        "input": {"uris": inputs, "shard_size": 4},
        "output": {"uri": out},
        "run": {"batch_size": 2, "num_actors": 1, "max_retries": 2, "upload_threads": 2},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return absolute_paths(parse_job(raw))


def job_id_of(config: JobConfig) -> str:
    return resolve_job_id(config)


def new_worker(config: JobConfig) -> ShardWorker:
    return ShardWorker(config, job_id_of(config))


def run_all_shards(config: JobConfig, worker: ShardWorker | None = None) -> list:
    plan = prepare_job(config)
    worker = worker or ShardWorker(config, plan.job_id)
    return [worker.run_shard(spec) for spec in plan.plan]


def check_output(storage: Storage, expected_ids: set[str], shards: int, fmt: str = "png") -> pa.Table:
    """Exactly once: every expected sample once, nothing else, every image present, no leftovers."""
    table = results.read_stats(storage)
    ids = table.column("sample_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicate samples"
    assert set(ids) == expected_ids
    assert len(results.committed_shards(storage)) == shards
    keys = set(storage.list())
    if fmt == "png":
        images = {k for k in keys if k.startswith("images/")}
        metadata = {layout.metadata_key(s) for s in range(shards)}
        assert images == set(table.column("image_key").to_pylist()) | metadata
    assert not [k for k in keys if k.startswith(layout.PARTIAL)], "partial files left behind"
    if isinstance(storage, LocalStorage):  # nor empty folders (`_partial/` was one)
        assert [d for d, subs, files in os.walk(storage.root) if not subs and not files] == []
    assert layout.JOB_FILE in keys
    return table


# Timing and placement columns: the only ones allowed to differ between two runs of one job.
# (batch_size too: a resumed shard decodes its remaining samples in other batches, with the same results.)
VOLATILE_COLUMNS = ("prefill_s", "decode_s", "pixel_s", "encode_s", "upload_s", "latency_s", "actor", "node",
                    "attempt", "batch_size")


def digest(storage: Storage) -> dict[str, tuple]:
    """sample id -> (image sha256, stats row minus timing and placement columns): equal for equal runs."""
    table = results.read_stats(storage)
    out = {}
    for row in table.to_pylist():
        image = hashlib.sha256(storage.read_bytes(row["image_key"])).hexdigest()
        stable = {k: v for k, v in row.items() if k not in VOLATILE_COLUMNS}
        out[row["sample_id"]] = (image, json.dumps(stable, sort_keys=True, default=str))
    return out


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_prompts(tmp_path_factory.mktemp("in") / "prompts.parquet", 10)


def test_worker_local_end_to_end(prompts: str, tmp_path: Path) -> None:
    config = make_job([prompts], str(tmp_path / "out"))
    reports = run_all_shards(config)
    assert [r.samples for r in reports] == [4, 4, 2] and all(r.committed for r in reports)
    storage = open_storage(config.output.uri)
    table = check_output(storage, {f"p{i:04d}" for i in range(10)}, shards=3)
    row = table.to_pylist()[0]
    assert row["model"] == "tiny-random" and row["method"] == "sjd" and row["attempt"] == 0
    assert row["step_compression"] >= 1 and row["tokens"] > 0 and row["image_key"].endswith(".png")
    assert json.loads(row["params_json"])["window"] == 8 and row["prompt"].startswith("a small red")
    png = storage.read_bytes(row["image_key"])
    assert decode_png(png).shape == (32, 32, 3)
    job = json.loads(storage.read_bytes(layout.JOB_FILE))
    assert job["job_id"] == job_id_of(config) and job["versions"]["torch"] and "git_revision" in job
    assert job["layout_version"] == layout.LAYOUT_VERSION
    assert job["identity"]["inputs"][0]["name"] == "prompts.parquet"
    commit = results.committed_shards(storage)[0]
    assert commit["rows"] == 4 and commit["stats_key"] == layout.stats_key(job_id_of(config), 0)


def test_shards_run_at_once_share_one_engine_and_change_no_image(prompts: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner keeps two shards in flight per actor: both feed one engine (the next shard fills the
    slots the last one leaves, no drain at the boundary), and every image and stat is what shards run
    one at a time give."""
    import concurrent.futures as cf

    import sjd_batch.stages.decode as decode_stage

    alone = make_job([prompts], str(tmp_path / "alone"))
    run_all_shards(alone)
    streams = []
    real = decode_stage.generate_stream

    def counted(*args: Any, **kwargs: Any) -> Any:  # the real engine, counted
        streams.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_stage, "generate_stream", counted)
    together = make_job([prompts], str(tmp_path / "together"))
    plan = prepare_job(together)
    worker = ShardWorker(together, plan.job_id)
    with cf.ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(worker.run_shard, plan.plan))
    assert [r.samples for r in reports] == [4, 4, 2] and all(r.committed for r in reports)
    assert len(streams) == 1, f"{len(streams)} engines for shards that overlapped"
    assert all(r.decode_s > 0 for r in reports)
    assert digest(open_storage(together.output.uri)) == digest(open_storage(alone.output.uri))
    worker.close()


def test_an_output_of_an_older_layout_is_not_resumed(prompts: str, tmp_path: Path) -> None:
    """Same job id, older layout (version 2: no metadata.jsonl, no .txt members): resuming would mix the
    two layouts in one dataset, so the run is refused before anything is written, saying why."""
    config = make_job([prompts], str(tmp_path / "out"))
    run_all_shards(config)
    storage = open_storage(config.output.uri)
    job = json.loads(storage.read_bytes(layout.JOB_FILE))
    storage.write_bytes(layout.JOB_FILE, json.dumps({**job, "layout_version": 2}).encode())
    before = sorted(storage.list())
    with pytest.raises(JobError, match="layout version 2; this one writes version 3: .*metadata.jsonl"):
        prepare_job(config)
    assert sorted(storage.list()) == before


def test_rerun_is_exactly_once(prompts: str, tmp_path: Path) -> None:
    config = make_job([prompts], str(tmp_path / "out"))
    worker = new_worker(config)
    run_all_shards(config, worker)
    storage = open_storage(config.output.uri)
    before = digest(storage)
    again = run_all_shards(config, worker)  # committed shards are skipped, nothing rewritten
    assert [r.committed for r in again] == [False] * 3 and sum(r.generated for r in again) == 0
    assert digest(storage) == before
    check_output(storage, set(before), shards=3)


def test_progress_callback(prompts: str, tmp_path: Path) -> None:
    config = make_job([prompts], str(tmp_path / "out"))
    shards = list(prepare_job(config).plan)
    calls: list[tuple[int, int]] = []
    new_worker(config).run_shard(shards[0], progress=lambda shard, n: calls.append((shard, n)))
    assert calls == [(0, 2), (0, 4)]  # after each batch of 2: samples done so far in shard 0


class CrashAfter(LocalStorage):
    """A real local folder that raises after `limit` image writes: an actor dying mid-shard."""

    def __init__(self, root: str, limit: int) -> None:
        super().__init__(root)
        self.limit = limit

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        if key.startswith("images/"):
            self.limit -= 1
            if self.limit < 0:
                raise OSError("simulated crash")
        return super().write_bytes(key, data, if_absent)


def test_crash_mid_shard_resumes_samples(prompts: str, tmp_path: Path) -> None:
    clean = make_job([prompts], str(tmp_path / "clean"))
    run_all_shards(clean)
    config = make_job([prompts], str(tmp_path / "crashed"))
    shards = list(prepare_job(config).plan)
    worker = new_worker(config)
    worker.storage = CrashAfter(config.output.uri, limit=2)  # shard 0: 2 of 4 images, then crash
    with pytest.raises(OSError, match="simulated crash"):
        worker.run_shard(shards[0])
    storage = open_storage(config.output.uri)
    assert not results.committed_shards(storage) and not results.read_stats(storage).num_rows
    worker.storage = storage
    report = worker.run_shard(shards[0], attempt=1)
    assert report.resumed == 2 and report.generated == 2 and report.committed
    for spec in shards[1:]:
        worker.run_shard(spec)
    table = check_output(storage, {f"p{i:04d}" for i in range(10)}, shards=3)
    assert sorted(table.column("attempt").to_pylist()) == [0] * 8 + [1] * 2
    # seeds depend on (job seed, sample id) only: the resumed output equals an uninterrupted run
    assert digest(storage) == digest(open_storage(clean.output.uri))


class NoDelete(LocalStorage):
    """A real local folder whose deletes fail: a worker killed between its commit and its clean-up."""

    def delete(self, key: str) -> None:
        raise OSError("simulated kill before clean-up")


def test_partials_of_committed_shards_are_swept(prompts: str, tmp_path: Path) -> None:
    config = make_job([prompts], str(tmp_path / "out"))
    shards = list(prepare_job(config).plan)
    worker = new_worker(config)
    worker.storage = NoDelete(config.output.uri)
    assert worker.run_shard(shards[0]).committed
    storage = open_storage(config.output.uri)
    assert len(storage.list(layout.PARTIAL)) == 2  # committed, but its partial files remain (1/batch)
    assert sweep_partials(storage) == 2 and not storage.list(layout.PARTIAL)


class NoListAfterCommit(LocalStorage):
    """A real local folder whose listings fail once the commit marker is written: the store went down
    between the commit and the clean-up of `_partial/`."""

    committed = False

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        self.committed |= key.startswith(layout.COMMITS)
        return super().write_bytes(key, data, if_absent)

    def list(self, prefix: str = "") -> list[str]:
        if self.committed and prefix.startswith(layout.PARTIAL):
            raise OSError("simulated outage after the commit")
        return super().list(prefix)


def test_a_failed_clean_up_never_fails_a_committed_shard(prompts: str, tmp_path: Path) -> None:
    """The clean-up after the marker is best effort: its failure (here the listing) must not turn a
    committed shard into a failed one, which the run summary would then miscount."""
    config = make_job([prompts], str(tmp_path / "out"))
    worker = new_worker(config)
    worker.storage = NoListAfterCommit(config.output.uri)
    assert worker.run_shard(next(iter(prepare_job(config).plan))).committed
    assert results.committed_shards(open_storage(config.output.uri)).keys() == {0}


def test_bad_rows_are_recorded(tmp_path: Path) -> None:
    table = pa.table({
        "id": ["ok0", "null", "empty", "blank", "utf8", "huge", "ok1"],
        "prompt": pa.array(
            [b"a blue square", None, b"", b"   ", b"caf\xe9 \xff", b"x" * 1_000_000, b"a cross"], pa.binary()
        ),
        "seed": pa.array([1, None, None, None, None, None, 12345], pa.int64()),
    })
    path = write_prompts(tmp_path / "in" / "bad.parquet", table)
    config = make_job([path], str(tmp_path / "out"), input={"shard_size": 10})
    [report] = run_all_shards(config)
    assert report.samples == 3 and report.bad_rows == 4 and report.committed
    storage = open_storage(config.output.uri)
    stats = check_output(storage, {"ok0", "huge", "ok1"}, shards=1)
    seeds = dict(zip(stats.column("sample_id").to_pylist(), stats.column("seed").to_pylist(), strict=True))
    assert seeds["ok0"] == 1 and seeds["ok1"] == 12345  # the `seed` column wins over the derived seed
    errors = results.read_errors(storage).to_pylist()
    reasons = {e["sample_id"]: (e["row"], e["reason"]) for e in errors}
    assert reasons["null"] == (1, "prompt is null")
    assert reasons["empty"] == (2, "prompt is empty")
    assert "whitespace" in reasons["blank"][1]
    assert reasons["utf8"][0] == 4 and "not valid UTF-8" in reasons["utf8"][1]
    assert all(e["source"] == path for e in errors)
    assert results.committed_shards(storage)[0]["errors"] == 4


def test_explicit_seed_column_reproduces(tmp_path: Path) -> None:
    """Two rows with the same explicit seed and prompt give the same image, whatever their ids."""
    table = pa.table({"id": ["a", "b"], "prompt": ["a pink cross"] * 2, "seed": [77, 77]})
    config = make_job([write_prompts(tmp_path / "in" / "s.parquet", table)], str(tmp_path / "out"))
    run_all_shards(config)
    storage = open_storage(config.output.uri)
    rows = results.read_stats(storage).to_pylist()
    assert [r["seed"] for r in rows] == [77, 77]
    assert storage.read_bytes(rows[0]["image_key"]) == storage.read_bytes(rows[1]["image_key"])


def test_webdataset_tars(prompts: str, tmp_path: Path) -> None:
    config = make_job([prompts], str(tmp_path / "out"), output={"image_format": "webdataset"})
    run_all_shards(config)
    storage = open_storage(config.output.uri)
    table = check_output(storage, {f"p{i:04d}" for i in range(10)}, shards=3, fmt="webdataset")
    tars = [layout.pack_key(i, "webdataset") for i in range(3)]
    assert sorted(k for k in storage.list(layout.IMAGES)) == tars
    members = read_tar_shard(storage.read_bytes(tars[0]))
    assert sorted(members) == ["p0000", "p0001", "p0002", "p0003"]
    assert members["p0000"]["txt"].decode().startswith("a small red")
    assert json.loads(members["p0000"]["json"])["id"] == "p0000"
    assert decode_png(members["p0000"]["png"]).shape == (32, 32, 3)
    assert table.column("image_key").to_pylist()[0] == layout.image_ref(0, "p0000", "webdataset")


@pytest.mark.s3
def test_worker_s3_end_to_end(s3_endpoint: str, bucket: str, s3_client: Any, tmp_path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(prompt_table(6), buf)
    s3_client.put_object(Bucket=bucket, Key="prompts/part-0.parquet", Body=buf.getvalue())
    config = make_job([f"s3://{bucket}/prompts/"], f"s3://{bucket}/out")
    assert expand_inputs(list(config.input.uris)) == [f"s3://{bucket}/prompts/part-0.parquet"]
    assert len(plan_inputs(expand_inputs(list(config.input.uris)), 4)) == 2
    run_all_shards(config)
    storage = open_storage(config.output.uri)
    table = check_output(storage, {f"p{i:04d}" for i in range(6)}, shards=2)
    listed = {o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket, Prefix="out/")["Contents"]}
    expected = {f"out/{k}" for k in table.column("image_key").to_pylist()}
    expected |= {f"out/{layout.stats_key(job_id_of(config), i)}" for i in range(2)}
    expected |= {f"out/{layout.commit_key(i)}" for i in range(2)} | {"out/job.json"}
    expected |= {f"out/{layout.metadata_key(i)}" for i in range(2)}
    assert listed == expected  # every object, and nothing else
    job_json = s3_client.get_object(Bucket=bucket, Key="out/job.json")["Body"].read().decode()
    assert "testsecret" not in job_json and "testkey" not in job_json
