"""A `RAY_ADDRESS` that nothing answers at: `sjd-batch run` says so in one paragraph and exits 2.

Before the check, `ray.init` retried the dead address for about 14 minutes and ended in a traceback;
the subprocess's timeout is what the old code failed on. No Ray is mocked: the CLI runs for real
against a closed local port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sjd_batch.io import layout
from sjd_batch.io.backends import open_storage
from sjd_batch.job import JobError
from sjd_batch.ray_address import check_ray_address
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]


def test_run_with_an_unreachable_ray_address_is_a_clear_error(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # free: nothing listens there
    env = {**os.environ, "RAY_ADDRESS": address}
    cmd = [sys.executable, "-m", "sjd_batch.cli", "run", "jobs/demo.yaml", "--no-progress",
           "--set", f"output.uri={tmp_path / 'out'}", "--set", "model.name=tiny-random"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert f"cannot reach the Ray cluster at RAY_ADDRESS={address}" in out.stderr
    assert "unset RAY_ADDRESS to run on an embedded local Ray" in out.stderr
    # the job claimed its output (job.json) before it needed Ray; nothing was decoded
    assert open_storage(str(tmp_path / "out")).list() == [layout.JOB_FILE]


@pytest.mark.parametrize("address", ["6379", "headnode", "host:port"])
def test_an_address_that_is_not_host_port_is_named(address: str) -> None:
    with pytest.raises(JobError, match=f"RAY_ADDRESS='{address}' is not a Ray address: expected HOST:PORT"):
        check_ray_address(address)


@pytest.mark.parametrize("address", ["auto", "local", "ray://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_what_ray_resolves_itself_or_what_listens_passes(address: str) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        check_ray_address(address.format(port=server.getsockname()[1]))
