"""The runner on a real Ray cluster: two nodes on one machine (`ray.cluster_utils.Cluster`), actors
killed mid-shard, a driver stopped mid-job, transient S3 failures, and bad inputs with clear errors.

One two-node cluster (1 CPU each) serves the whole module; drivers started as subprocesses join it
through RAY_ADDRESS. Bad-input tests run the CLI with `--local` (no Ray) since the errors come before
any actor starts.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sjd_batch import cli
from sjd_batch.config import load_job
from sjd_batch.io import results
from sjd_batch.io.backends import open_storage
from tests.conftest import ray_cluster
from tests.test_worker import check_output, digest, make_job, prompt_table, write_prompts

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str) -> Iterator[Any]:
    """Two Ray nodes of 1 CPU each; started after the S3 server so its workers inherit the AWS env."""
    with ray_cluster(NODE_ARGS, [NODE_ARGS]) as c:
        yield c


def run(config, **kwargs: Any):  # noqa: ANN001, ANN201
    from sjd_batch.runner import run_job

    return run_job(config, progress=False, **kwargs)


def ids(n: int) -> set[str]:
    return {f"p{i:04d}" for i in range(n)}


def save_job(config, path: Path) -> Path:  # noqa: ANN001
    path.write_text(config.to_yaml())
    return path


def job_id_in(config) -> str:  # noqa: ANN001
    """The id of the job that wrote `config`'s output (from its job.json)."""
    return json.loads((Path(config.output.uri) / "job.json").read_text())["job_id"]


@pytest.mark.ray
def test_two_nodes_exactly_once(cluster: Any, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", 24)
    # AR, one sample at a time: enough work that the second actor is ready before the first is done
    config = make_job([prompts], str(tmp_path / "out"), method={"name": "ar"}, input={"shard_size": 3},
                      run={"num_actors": 2, "batch_size": 1})
    summary = run(config)
    assert summary.ok and summary.shards_committed == 8 and summary.samples == 24, summary.text()
    storage = open_storage(config.output.uri)
    table = check_output(storage, ids(24), shards=8)
    assert len(set(table.column("node").to_pylist())) == 2  # one actor per node (1 CPU each)
    assert len(set(table.column("actor").to_pylist())) == 2
    before = digest(storage)
    again = run(config)  # a rerun skips every committed shard and changes nothing
    assert again.ok and again.shards_skipped == 8 and again.generated == 0
    assert digest(storage) == before


@pytest.mark.ray
def test_demo_job_cli(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's main command, on the test cluster: images and stats in a local folder."""
    out = tmp_path / "demo"
    capsys.readouterr()
    job = str(REPO / "jobs" / "demo.yaml")
    sets = ["--set", f"output.uri={out}", "--set", "model.name=tiny-random"]  # tests stay fast
    assert cli.main(["run", job, *sets, "--no-progress"]) == 0
    assert "3 committed now, 0 failed" in capsys.readouterr().out
    demo_ids = set(pq.read_table(REPO / "jobs" / "prompts" / "demo.parquet").column("id").to_pylist())
    check_output(open_storage(str(out)), demo_ids, shards=3)
    assert cli.main(["stats", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["total", str(len(demo_ids))]


@pytest.mark.s3
def test_demo_s3_job(s3_endpoint: str, s3_client: Any, capsys: pytest.CaptureFixture) -> None:
    """jobs/demo_s3.yaml against the local S3 server, then `sjd-batch stats` reads it back."""
    if "sjd-demo" not in {b["Name"] for b in s3_client.list_buckets()["Buckets"]}:
        s3_client.create_bucket(Bucket="sjd-demo")
    output = f"s3://sjd-demo/{uuid.uuid4().hex[:8]}"
    capsys.readouterr()
    code = cli.main(["run", str(REPO / "jobs" / "demo_s3.yaml"), "--local", "--no-progress",
                     "--set", f"output.uri={output}", "--set", "model.name=tiny-random"])
    assert code == 0, capsys.readouterr()
    assert "3 committed now" in capsys.readouterr().out
    assert cli.main(["stats", output, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"]["samples"] == 24 and stats["total"]["shards"] == 3


def _descends_from_us(pid: int) -> bool:
    """Whether `pid` is a descendant of this test process (the cluster's nodes are our children)."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])  # field 4: the parent pid
        except (OSError, ValueError, IndexError):
            return False
        if pid == os.getpid():
            return True
    return False


def _kill_when_busy(pattern: bytes, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first of our processes whose title shows it running `pattern` (`ray::Class.method`)."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                continue
            if title.startswith(b"ray::") and pattern in title and _descends_from_us(int(pid)):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.02)


def _run_killing_an_actor(config: Any) -> tuple[Any, list[int]]:
    """Run the job while a thread SIGKILLs the first actor seen running a shard."""
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_when_busy, args=(b"run_shard", stop, killed), daemon=True)
    killer.start()
    try:
        return run(config), killed
    finally:
        stop.set()
        killer.join()


@pytest.mark.ray
def test_actor_killed_mid_shard(cluster: Any, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", 24)
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 8},
                      run={"num_actors": 2, "batch_size": 1, "max_retries": 2})
    summary, killed = _run_killing_an_actor(config)
    assert killed, "no actor was seen running a shard"
    assert summary.ok and summary.retries >= 1, summary.text()
    storage = open_storage(config.output.uri)
    table = check_output(storage, ids(24), shards=3)
    assert max(table.column("attempt").to_pylist()) >= 1  # the killed shard ran again
    clean = make_job([prompts], str(tmp_path / "clean"), input={"shard_size": 8})
    from sjd_batch.runner import run_local

    run_local(clean, progress=False)
    assert digest(storage) == digest(open_storage(clean.output.uri))


@pytest.mark.ray
def test_retry_limit_reported_then_rerun(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With no retries left, the shards of an actor that dies are reported (it holds up to two at once);
    committed shards stay; a rerun heals."""
    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", 24)
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 8},
                      run={"num_actors": 1, "batch_size": 1, "max_retries": 0})
    summary, killed = _run_killing_an_actor(config)
    assert killed and not summary.ok and len(summary.failed) in (1, 2), summary.text()
    for shard, error in summary.failed.items():
        assert "ActorDiedError" in error and f"shard {shard} failed: ActorDiedError" in summary.text()
    storage = open_storage(config.output.uri)
    committed = set(results.committed_shards(storage))
    assert committed == {0, 1, 2} - set(summary.failed)  # the others committed, on the replacement actor
    capsys.readouterr()
    assert cli.main(["status", config.output.uri]) == 0
    failed = len(summary.failed)
    assert f"{3 - failed} committed, {failed} failed, 0 pending" in capsys.readouterr().out
    assert run(config).ok  # the rerun runs only the failed shards
    check_output(storage, ids(24), shards=3)


@pytest.mark.ray
def test_actors_that_cannot_start(cluster: Any, tmp_path: Path) -> None:
    """A model that cannot load in the actors fails every shard with the reason, instead of hanging."""
    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", 8)
    config = make_job([prompts], str(tmp_path / "out"), model={"device": "cuda:7"}, run={"num_actors": 2})
    summary = run(config)
    assert not summary.ok and sorted(summary.failed) == [0, 1], summary.text()
    assert all(e.startswith("no actor could start: ") for e in summary.failed.values())
    assert not results.committed_shards(open_storage(config.output.uri))


@pytest.mark.ray
def test_driver_stopped_then_rerun(cluster: Any, tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", 24)
    config = make_job([prompts], str(tmp_path / "out"), input={"shard_size": 4},
                      run={"num_actors": 1, "batch_size": 1})
    job = save_job(config, tmp_path / "job.yaml")
    env = {**os.environ, "RAY_ADDRESS": cluster.address}
    cmd = [sys.executable, "-m", "sjd_batch.cli", "run", str(job), "--no-progress"]
    driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = open_storage(config.output.uri)
    deadline = time.monotonic() + 120
    while not results.committed_shards(storage) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)  # the driver dies without any chance to clean up
    driver.wait(timeout=30)
    done = len(results.committed_shards(storage))
    assert 1 <= done < 6, f"driver should die mid-job, {done} of 6 shards committed"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{done} already committed" in rerun.stdout
    clean = make_job([prompts], str(tmp_path / "clean"), input={"shard_size": 4})
    from sjd_batch.runner import run_local

    run_local(clean, progress=False)
    check_output(storage, ids(24), shards=6)
    assert digest(storage) == digest(open_storage(clean.output.uri))


@pytest.mark.ray
@pytest.mark.s3
def test_s3_job_through_flaky_proxy(cluster: Any, bucket: str, s3_client: Any, flaky_proxy: Any,
                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    buf = io.BytesIO()
    pq.write_table(prompt_table(8), buf)
    s3_client.put_object(Bucket=bucket, Key="prompts/part-0.parquet", Body=buf.getvalue())
    proxy = flaky_proxy(fail_first=6, methods=("PUT",))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)  # the runner forwards it to the actors
    config = make_job([f"s3://{bucket}/prompts/"], f"s3://{bucket}/out", run={"num_actors": 2})
    summary = run(config)
    assert summary.ok, summary.text()
    assert proxy.failed == 6  # six PUTs were answered 503 and retried
    storage = open_storage(config.output.uri)
    check_output(storage, ids(8), shards=2)
    capsys.readouterr()
    assert cli.main(["stats", config.output.uri, "--json", "--by", "shard"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"]["samples"] == 8 and set(stats["groups"]) == {"0", "1"}
    assert stats["total"]["step_compression"]["mean"] >= 1 and stats["total"]["images_per_s"] > 0
    assert cli.main(["status", config.output.uri]) == 0
    assert "2 committed, 0 failed, 0 pending" in capsys.readouterr().out


# --- bad inputs: clear errors naming file, row or field; committed outputs stay valid ---------------


def cli_run(capsys: pytest.CaptureFixture, job: Path, *sets: str) -> tuple[int, str, str]:
    capsys.readouterr()
    args = ["run", str(job), "--local", "--no-progress"] + [a for s in sets for a in ("--set", s)]
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def good_job(tmp_path: Path, capsys: pytest.CaptureFixture) -> tuple[Path, Any]:
    """A job over a prefix with one good file, already run once (2 shards committed)."""
    write_prompts(tmp_path / "in" / "a.parquet", 8)
    config = make_job([str(tmp_path / "in")], str(tmp_path / "out"))
    job = save_job(config, tmp_path / "job.yaml")
    assert cli_run(capsys, job)[0] == 0
    return job, config


def test_missing_prompt_column(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_prompts(tmp_path / "in" / "a.parquet", 4)
    bad = tmp_path / "in" / "b.parquet"
    pq.write_table(prompt_table(4, start=4).rename_columns(["id", "caption"]), bad)
    config = make_job([str(tmp_path / "in")], str(tmp_path / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and f"{bad} has no `prompt` column" in err  # refused before any work
    assert not (tmp_path / "out" / "job.json").exists()


def test_input_error_mid_job_fails_only_its_shard(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A file that breaks while the job runs fails its shard (not retried); the rest commits. (Between
    two runs the change is caught at planning: the input's identity is part of the job id.)"""
    write_prompts(tmp_path / "in" / "a.parquet", 4)
    bad = Path(write_prompts(tmp_path / "in" / "b.parquet", prompt_table(4, start=4)))
    config = make_job([str(tmp_path / "in")], str(tmp_path / "out"))
    from sjd_batch.driver import run_local
    from sjd_batch.job import prepare_job

    plan = prepare_job(config)  # the plan is fixed (job.json written); now the file loses its prompts
    pq.write_table(prompt_table(4, start=4).rename_columns(["id", "caption"]), bad)
    summary = run_local(config, progress=False, plan=plan)
    out = summary.text()
    assert not summary.ok and f"{bad} has no `prompt` column" in out
    assert "0 retries" in out  # an input error is permanent: not retried
    storage = open_storage(config.output.uri)
    check_output(storage, ids(4), shards=1)  # the good file's shard is committed and valid
    capsys.readouterr()
    assert cli.main(["status", config.output.uri]) == 0
    status = capsys.readouterr().out
    assert "1 committed, 1 failed, 0 pending" in status and "no `prompt` column" in status
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))  # a rerun: refused up front
    assert code == 2 and "changed since" in err


def test_corrupt_parquet_keeps_committed(good_job: tuple[Path, Any], capsys: pytest.CaptureFixture) -> None:
    job, config = good_job
    corrupt = Path(config.input.uris[0]) / "z.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    code, _, err = cli_run(capsys, job)
    assert code == 2 and f"{corrupt} is not a readable Parquet file" in err
    check_output(open_storage(config.output.uri), ids(8), shards=2)


def test_changed_input_refused(good_job: tuple[Path, Any], capsys: pytest.CaptureFixture) -> None:
    job, config = good_job
    write_prompts(Path(config.input.uris[0]) / "b.parquet", prompt_table(3, start=100))
    code, _, err = cli_run(capsys, job)
    assert code == 2 and "changed since" in err and "must never change between runs" in err
    check_output(open_storage(config.output.uri), ids(8), shards=2)


def test_other_job_refused(good_job: tuple[Path, Any], capsys: pytest.CaptureFixture) -> None:
    job, config = good_job
    code, _, err = cli_run(capsys, job, "run.seed=99")
    assert code == 2 and "jobs never mix in one output" in err and job_id_in(config) in err
    check_output(open_storage(config.output.uri), ids(8), shards=2)


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def test_rerun_with_another_batch_size_is_complete(good_job: tuple[Path, Any],
                                                   capsys: pytest.CaptureFixture) -> None:
    """The job id covers what the job produces, not how it is batched: nothing to do, nothing written."""
    from sjd_batch.runner import run_job

    job, config = good_job
    out = Path(config.output.uri)
    before = _snapshot(out)
    code, text, err = cli_run(capsys, job, "run.batch_size=3")
    assert code == 0 and "already complete" in text and "nothing was written" in text, text + err
    summary = run_job(load_job(job, ["run.batch_size=1"]), progress=False)  # the Ray path starts no Ray
    assert summary.ok and summary.complete_before and summary.shards_committed == 0
    assert _snapshot(out) == before  # not one byte, not one mtime


def test_inputs_read_from_another_folder_are_the_same_job(good_job: tuple[Path, Any], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """What `ray job submit` does: the same files under another (temporary) folder are the same job."""
    import shutil

    job, config = good_job
    elsewhere = tmp_path / "ray-working-dir" / "prompts"
    shutil.copytree(config.input.uris[0], elsewhere)
    code, text, err = cli_run(capsys, job, f"input.uris=[{elsewhere}]")
    assert code == 0 and "already complete" in text, text + err


def test_duplicate_ids_across_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_prompts(tmp_path / "in" / "a.parquet", 3)
    b = write_prompts(tmp_path / "in" / "b.parquet", prompt_table(3, start=2))  # p0002 again
    config = make_job([a, b], str(tmp_path / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and f"'p0002' at {a} row 2 and at {b} row 0" in err and "unique id" in err
    assert not (tmp_path / "out" / "job.json").exists()


def test_explicit_id_equal_to_a_generated_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Generated ids are part of the duplicate check: `gen-00000001` would overwrite that row's image."""
    gen = write_prompts(tmp_path / "in" / "gen.parquet", prompt_table(3).drop_columns(["id"]))
    named = write_prompts(tmp_path / "in" / "named.parquet", prompt_table(1).set_column(
        0, "id", pa.array(["gen-00000001"])))
    config = make_job([gen, named], str(tmp_path / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and f"'gen-00000001' at {gen} row 1 (generated: that file has no `id` column)" in err
    assert not (tmp_path / "out" / "job.json").exists()


def test_output_inside_the_input_prefix_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Its stats Parquet files would be read as prompts on the rerun."""
    write_prompts(tmp_path / "data" / "a.parquet", 4)
    config = make_job([str(tmp_path / "data")], str(tmp_path / "data" / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and f"output.uri {tmp_path / 'data' / 'out'} is inside the input prefix" in err
    assert not (tmp_path / "data" / "out").exists()
    beside = make_job([str(tmp_path / "data")], str(tmp_path / "data-out"))  # a sibling is fine
    assert cli_run(capsys, save_job(beside, tmp_path / "job.yaml"))[0] == 0


def test_empty_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()
    config = make_job([str(tmp_path / "empty")], str(tmp_path / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and f"no Parquet files found at {tmp_path / 'empty'}" in err
    zero = write_prompts(tmp_path / "zero" / "z.parquet", prompt_table(0))
    config = make_job([zero], str(tmp_path / "out"))
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and "hold no rows" in err


def test_unknown_model_and_invalid_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = make_job([write_prompts(tmp_path / "in" / "a.parquet", 2)], str(tmp_path / "out"))
    job = save_job(config, tmp_path / "job.yaml")
    code, _, err = cli_run(capsys, job, "model.name=tiny-randon")
    assert code == 2 and "model.name: unknown model 'tiny-randon'" in err
    assert "(did you mean 'tiny-random'?)" in err
    code, _, err = cli_run(capsys, job, "model.dtype=float8")
    assert code == 2 and "model.dtype: unknown dtype 'float8'" in err
    code, _, err = cli_run(capsys, job, "run.num_actor=2")
    assert code == 2 and f"{job}: run.num_actor: unknown key (did you mean 'num_actors'?)" in err
    raw = yaml.safe_load(job.read_text())
    raw["method"]["widow"] = 4
    job.write_text(yaml.safe_dump(raw))
    code, _, err = cli_run(capsys, job)
    assert code == 2 and "method.widow: unknown key (did you mean 'window'?)" in err
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.s3
def test_missing_bucket_and_wrong_credentials(s3_endpoint: str, bucket: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    prompts = write_prompts(tmp_path / "in" / "a.parquet", 2)
    config = make_job([prompts], "s3://no-such-bucket-sjd/out")
    code, _, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and "no-such-bucket-sjd" in err
    config = make_job([prompts], f"s3://{bucket}/out")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    code, out, err = cli_run(capsys, save_job(config, tmp_path / "job.yaml"))
    assert code == 2 and bucket in err and "credential" in err.lower()
    assert "wrong-secret-value" not in err + out


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A `ray start --head --block` with the Jobs API, in its own process group, stopped by that group id."""
    from tests.conftest import free_port

    gcs, dashboard = free_port(), free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs}",
           f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--node-ip-address=127.0.0.1",
           "--include-dashboard=true", "--num-cpus=2", "--object-store-memory=150000000",
           "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 90
        while True:
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:  # noqa: BLE001 - the dashboard is still starting
                if time.monotonic() > deadline or head.poll() is not None:
                    pytest.fail("ray head did not start")
                time.sleep(1)
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # exactly the processes this fixture started
        try:
            head.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)


@pytest.mark.ray
@pytest.mark.slow
def test_submit_follow(ray_head: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = make_job([write_prompts(tmp_path / "in" / "a.parquet", 6)], str(tmp_path / "out"))
    job = save_job(config, tmp_path / "job.yaml")
    capsys.readouterr()
    assert cli.main(["submit", str(job), "--address", ray_head, "--follow"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"sjd-{job_id_in(config)}" and "OK" in out
    check_output(open_storage(config.output.uri), ids(6), shards=2)
    assert cli.main(["submit", str(job), "--address", ray_head]) == 2  # never started twice
    assert "already submitted" in capsys.readouterr().err


def test_submit_to_no_dashboard_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.conftest import free_port

    config = make_job([write_prompts(tmp_path / "in" / "a.parquet", 2)], str(tmp_path / "out"))
    job = save_job(config, tmp_path / "job.yaml")
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(["submit", str(job), "--address", address]) == 2
    err = capsys.readouterr().err
    assert f"no Ray dashboard answers at {address}" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was started or written


def test_status_and_stats_errors(good_job: tuple[Path, Any], tmp_path: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    _, config = good_job
    capsys.readouterr()
    assert cli.main(["status", str(tmp_path / "nowhere")]) == 2
    assert "job.json does not exist" in capsys.readouterr().err
    assert cli.main(["stats", config.output.uri, "--by", "methd"]) == 2
    assert "--by methd: no such stats column" in capsys.readouterr().err
    assert cli.main(["stats", config.output.uri, "--by", "method"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:2] == ["total", "8"] and lines[2].split()[:2] == ["method=sjd", "8"]
