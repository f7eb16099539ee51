"""Several Ray nodes on one machine (`ray.cluster_utils.Cluster`, each node a raylet with its own CPUs and
object store): actors spread across the nodes, and a whole node killed mid-job, taking its actors, its
workers and its objects with it. The job must complete with every sample exactly once, byte-identical
to a clean run. Slow (minutes on 2 cores): run with `pytest -m slow tests/test_multinode.py`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from sjd_batch.io.backends import open_storage
from tests.conftest import ray_cluster
from tests.test_worker import check_output, digest, make_job, write_prompts

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
SAMPLES, SHARD = 96, 4


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A head that runs no actor (0 CPUs: the driver's node) and three 1-CPU worker nodes."""
    with ray_cluster({**NODE, "num_cpus": 0}, [NODE] * 3) as c:
        yield c


def _commits(out: Path) -> int:
    folder = out / "_commits"
    return len(os.listdir(folder)) if folder.exists() else 0


def _kill_a_node_when(cluster: Any, out: Path, after: int, stop: threading.Event, log: list[str]) -> None:
    """Once `after` shards are committed, remove a worker node with no grace (its raylet and every
    worker process on it are killed): the one that hosts the progress board if a worker node does (the
    runner keeps the board on the driver's node when that node can host it), else one running a shard.
    No node replaces it: the replacement actor stays pending, and the nodes left finish the job."""
    from ray._private.state import actors  # the GCS actor table (the state API needs a dashboard)

    while not stop.is_set() and _commits(out) < after:
        time.sleep(0.05)
    alive = [a for a in (actors() if not stop.is_set() else {}).values() if a.get("State") == "ALIVE"]
    hosts = {name: {a["Address"]["NodeID"] for a in alive if name in a.get("ActorClassName", "")}
             for name in ("_ShardActor", "_ProgressBoard")}
    workers = {n.node_id: n for n in cluster.worker_nodes}
    victims = [workers[i] for i in hosts["_ProgressBoard"] if i in workers]
    victims += [workers[i] for i in hosts["_ShardActor"] if i in workers]
    if not victims:
        log.append(f"no worker node runs a shard actor: {hosts}")
        return
    on = "the progress board and " if victims[0].node_id in hosts["_ProgressBoard"] else ""
    cluster.remove_node(victims[0], allow_graceful=False)
    log.append(f"killed node {victims[0].node_id[:12]} ({on}a shard actor) after {_commits(out)} commits")


@pytest.mark.slow
@pytest.mark.ray
def test_node_killed_mid_job(cluster: Any, tmp_path: Path) -> None:
    from sjd_batch.runner import run_job, run_local

    prompts = write_prompts(tmp_path / "in" / "prompts.parquet", SAMPLES)
    out = tmp_path / "out"
    config = make_job([prompts], str(out), method={"name": "ar"}, input={"shard_size": SHARD},
                      run={"num_actors": 3, "batch_size": 2, "max_retries": 3, "cpus_per_actor": 1})
    stop, log = threading.Event(), []
    killer = threading.Thread(target=_kill_a_node_when, args=(cluster, out, 3, stop, log), daemon=True)
    killer.start()
    try:
        summary = run_job(config, progress=False)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert log and log[0].startswith("killed node"), log
    assert summary.ok and summary.retries >= 1, summary.text()
    storage = open_storage(str(out))
    table = check_output(storage, {f"p{i:04d}" for i in range(SAMPLES)}, shards=SAMPLES // SHARD)
    assert len(set(table.column("node").to_pylist())) >= 3  # actors ran on several nodes, one of them lost
    clean = make_job([prompts], str(tmp_path / "clean"), method={"name": "ar"}, input={"shard_size": SHARD})
    run_local(clean, progress=False)
    assert digest(storage) == digest(open_storage(clean.output.uri))  # byte-identical images, same stats
    print(f"node loss: {log[0]}; {table.num_rows} samples checked, 0 lost, 0 duplicated")
