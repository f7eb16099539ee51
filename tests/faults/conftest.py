"""Fixtures of the fault-injection suite: the uninterrupted reference run and the shared context."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sjd_batch.io.backends import open_storage
from tests.faults.harness import METHOD, MODEL, PROMPT_POOL, reference_digests, write_prompts
from tests.faults.trials import Context
from tests.test_worker import make_job


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """sample id -> image sha256 from one uninterrupted, fault-free run of the whole prompt pool."""
    from sjd_batch.runner import run_local

    root = tmp_path_factory.mktemp("reference")
    prompts = write_prompts(open_storage(str(root)), "pool.parquet", PROMPT_POOL)
    config = make_job([prompts], str(root / "out"), model=MODEL, method=METHOD,
                      input={"shard_size": 8}, run={"batch_size": 4})
    assert run_local(config, progress=False).ok
    return reference_digests(open_storage(config.output.uri))


@pytest.fixture(scope="module")
def fault_cluster(s3_endpoint: str) -> Iterator[str]:
    """Two Ray nodes of 1 CPU each for the trials that drive Ray (drivers join through RAY_ADDRESS)."""
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
    head = {**node, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, connect=False, head_node_args=head)
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def context(tmp_path: Path, s3_endpoint: str, bucket: str, reference: dict[str, str],
            ray_address: str | None) -> Context:
    return Context(tmp=tmp_path, s3_endpoint=s3_endpoint, bucket=bucket, ray_address=ray_address,
                   reference=reference, secret=os.environ["AWS_SECRET_ACCESS_KEY"])


def ray_logs_leak(secret: str) -> list[Any]:
    """Ray session log files (of every session under /tmp/ray) holding `secret`."""
    raw = secret.encode()
    return [p for p in Path("/tmp/ray").glob("session_*/logs/*") if p.is_file() and raw in p.read_bytes()]
