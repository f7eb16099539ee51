"""`sjd-batch submit`'s actor sizing, as pure arithmetic on node resources (the real cluster is in
tests/infra/test_ray_job_submit.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sjd_batch.commands.submit import actors_that_fit, size_job
from sjd_batch.config import ConfigError
from sjd_batch.identity import job_id
from sjd_batch.io.shards import InputFile
from tests.test_worker import make_job

HEAD_2CPU = [(True, {"CPU": 2.0, "memory": 1e9})]
GPU_CLUSTER = [(True, {"CPU": 1.0}), (False, {"CPU": 4.0, "GPU": 1.0}), (False, {"CPU": 4.0, "GPU": 1.0})]


def test_actors_fit_per_node_with_the_driver_on_the_head() -> None:
    assert actors_that_fit(HEAD_2CPU, cpus=1, gpus=0, driver_cpus=0) == 2
    assert actors_that_fit(HEAD_2CPU, cpus=1, gpus=0, driver_cpus=0.1) == 1  # the reported case
    assert actors_that_fit([(True, {"CPU": 1.9})], cpus=0.95, gpus=0, driver_cpus=0) == 2  # no float loss
    assert actors_that_fit(GPU_CLUSTER, cpus=2, gpus=1, driver_cpus=0.1) == 2  # one per GPU worker
    assert actors_that_fit(GPU_CLUSTER, cpus=3, gpus=0, driver_cpus=0) == 2  # never across two nodes
    assert actors_that_fit(GPU_CLUSTER, cpus=0, gpus=0.5, driver_cpus=0) == 4
    assert actors_that_fit(GPU_CLUSTER, cpus=0, gpus=0, driver_cpus=0) is None  # needs nothing
    assert actors_that_fit([(True, {"CPU": 0.5})], cpus=1, gpus=0, driver_cpus=1) == 0


def test_size_job_lowers_num_actors_and_says_why(tmp_path: Path) -> None:
    config = make_job(["/x.parquet"], str(tmp_path / "out"), run={"num_actors": 3, "cpus_per_actor": 1.0})
    sized, line = size_job(config, HEAD_2CPU, driver_cpus=0)
    inputs = [InputFile("/x.parquet", 10, True, 1234, "0" * 16)]
    assert sized.run.num_actors == 2 and job_id(sized, inputs) == job_id(config, inputs)  # same job
    assert "2 actor(s) fit, not run.num_actors=3; submitting 2" in line and "2 CPU, 0 GPU" in line
    same, line = size_job(config, [(True, {"CPU": 8.0})], driver_cpus=0)
    assert same is config and "3 actor(s) as asked" in line
    gpu = make_job(["/x.parquet"], str(tmp_path / "out"), run={"gpus_per_actor": 1.0})
    with pytest.raises(ConfigError, match="no actor fits: the cluster has 1 node"):
        size_job(gpu, HEAD_2CPU, driver_cpus=0)
