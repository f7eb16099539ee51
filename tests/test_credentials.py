"""No credential in any output channel: stdout, stderr (file-descriptor level, so subprocesses count),
log records, files written, job.json, stats and reports.

Two ways a secret reaches sjd-batch: in a URI (`s3://KEY:SECRET@bucket/...`, refused everywhere with
the secret left out of the message) and in the AWS environment (used, never written). Both are grepped
for in everything a command leaves behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sjd_batch import cli
from sjd_batch.io.backends import open_storage
from tests.test_worker import make_job, write_prompts

SECRET = "Sjd/Secret+Never-Print-5f2c9"  # as AWS secrets, with '/' and '+'
KEY_ID = "AKIASJDNEVERPRINT"


def grep_tree(root: Path, needle: str) -> list[str]:
    """Files under `root` whose bytes contain `needle`."""
    raw = needle.encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]


def channels(capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> str:
    out, err = capfd.readouterr()
    return out + err + "\n".join(r.getMessage() for r in caplog.records)


@pytest.fixture
def job_files(tmp_path: Path) -> tuple[Path, str]:
    prompts = write_prompts(tmp_path / "in" / "a.parquet", 2)
    config = make_job([prompts], str(tmp_path / "out"))
    path = tmp_path / "job.yaml"
    path.write_text(config.to_yaml())
    return path, prompts


@pytest.mark.parametrize("where", ["output", "input", "model"])
def test_a_credential_in_a_job_uri_is_never_printed(where: str, job_files: tuple[Path, str], tmp_path: Path,
                                                    capfd: pytest.CaptureFixture,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    job, prompts = job_files
    uri = f"s3://{KEY_ID}:{SECRET}@bucket/{where}"
    key = {"output": "output.uri", "input": "input.uris", "model": "model.name"}[where]
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    runs = [["run", str(job), "--local", "--no-progress", "--set", f"{key}={uri}"],
            ["submit", str(job), "--address", "http://127.0.0.1:9", "--set", f"{key}={uri}"]]
    for args in runs:
        assert cli.main(args) == 2
        text = channels(capfd, caplog)
        assert SECRET not in text and KEY_ID not in text, text
        assert "***@bucket" in text, text  # the error names the URI, redacted
    assert not grep_tree(tmp_path, SECRET)


@pytest.mark.parametrize("command", ["status", "stats", "report"])
def test_a_credential_in_a_reader_uri_is_never_printed(command: str, tmp_path: Path,
                                                       capfd: pytest.CaptureFixture,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    extra = ["--out", str(tmp_path / "r.html")] if command == "report" else []
    assert cli.main([command, f"s3://{KEY_ID}:{SECRET}@bucket/out", *extra]) == 2
    text = channels(capfd, caplog)
    assert SECRET not in text and KEY_ID not in text and "credentials in a URI are refused" in text, text
    assert not grep_tree(tmp_path, SECRET)


@pytest.mark.s3
def test_the_environments_secret_is_never_written(bucket: str, s3_client, tmp_path: Path,
                                                  capfd: pytest.CaptureFixture,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A real S3 job with the credentials in the environment: the secret (and the key id) appear in no
    output stream, no log record, no stored object and no local file."""
    import os

    secret, key_id = os.environ["AWS_SECRET_ACCESS_KEY"], os.environ["AWS_ACCESS_KEY_ID"]
    prompts = write_prompts(tmp_path / "in" / "a.parquet", 4)
    config = make_job([prompts], f"s3://{bucket}/out")
    job = tmp_path / "job.yaml"
    job.write_text(config.to_yaml())
    caplog.set_level(logging.DEBUG)
    capfd.readouterr()
    assert cli.main(["run", str(job), "--local", "--no-progress"]) == 0
    for args in (["status", config.output.uri], ["stats", config.output.uri],
                 ["report", config.output.uri, "--out", str(tmp_path / "report.html"), "--no-progress"]):
        assert cli.main(args) == 0
    text = channels(capfd, caplog)
    assert "1 committed now" in text
    assert secret not in text and f"{key_id}:" not in text
    storage = open_storage(f"s3://{bucket}")
    keys = storage.list()
    assert "out/job.json" in keys and any(k.startswith("out/stats/") for k in keys)
    leaked = [k for k in keys if secret.encode() in storage.read_bytes(k)]
    assert not leaked and not grep_tree(tmp_path, secret)
