"""What a local `sjd-batch run` prints: no Ray token-auth warning, and no transformers "Loading weights"
bar copied from every actor into the job output. A real embedded Ray, started the way a user starts
it (RAY_AUTH_MODE unset, so Ray's default token authentication applies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_worker import make_job, write_prompts


@pytest.mark.ray
def test_a_local_run_prints_no_auth_warning_and_no_loading_bars(tmp_path: Path) -> None:
    prompts = write_prompts(tmp_path / "in" / "a.parquet", 2)
    config = make_job([prompts], str(tmp_path / "out"), model={"name": "shapes-t2i"},  # transformers loads it
                      method={"name": "sjd", "window": 16}, input={"shard_size": 1},
                      run={"num_actors": 2, "batch_size": 1})
    job = tmp_path / "job.yaml"
    job.write_text(config.to_yaml())
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path / "home")  # Ray writes its token file under ~/.ray: not the user's
    cmd = [sys.executable, "-m", "sjd_batch.cli", "run", str(job), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "2 committed now" in done.stdout
    assert "Token authentication is enabled" not in text, text[-3000:]
    assert "Loading weights" not in text, text[-3000:]
    assert (tmp_path / "home" / ".ray" / "auth_token").exists()  # token auth is still on, as Ray's default
