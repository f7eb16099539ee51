"""Hostile roots and broken disks: URIs that do not mean what they say, credentials in URIs, outputs
that no job may write to, and local OSErrors (full, read-only, not permitted) told in words."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage, StorageError, check_uri, redact_uri, scrub_credentials
from tests.mounts import remount_read_only, tmpfs, without_permission_override

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYsecret"  # AWS secrets hold '/' and '+'


@pytest.mark.parametrize("uri", ["s3:/bucket/x", "s3:bucket/x", "S3:/bucket", "file:/tmp/x", "gs:/b/x"])
def test_one_slash_schemes_are_refused(uri: str) -> None:
    """`s3:/bucket/x` used to be a local folder named `s3:`, silently."""
    with pytest.raises(StorageError, match="two slashes"):
        open_storage(uri)


# A bare token with a '/' (s3://TO/KEN@bucket) cannot be told from bucket TO and key KEN@bucket.
@pytest.mark.parametrize("uri", [f"s3://AKIAEXAMPLE:{SECRET}@bucket/out",
                                 f"s3://{SECRET.replace('/', '')}@bucket", f"file://user:{SECRET}@/tmp/x"])
def test_credentials_in_a_uri_are_refused_without_echoing_them(uri: str) -> None:
    with pytest.raises(StorageError, match="credentials in a URI are refused") as e:
        open_storage(uri)
    assert SECRET not in str(e.value) and SECRET.replace("/", "") not in str(e.value)
    assert "AKIAEXAMPLE" not in str(e.value)
    assert "***@" in str(e.value)


def test_redact_and_check_uri() -> None:
    assert redact_uri(f"s3://K:{SECRET}@b/p") == "s3://***@b/p"
    assert redact_uri("s3://b/p@x") == "s3://b/p@x"  # an @ after the bucket is a key character
    assert redact_uri("s3://b/p:q@x") == "s3://b/p:q@x"
    assert scrub_credentials(f"got ['s3://K:{SECRET}@b/x', 'file://u:p@/x', s3://b/k@v]") == (
        "got ['s3://***@b/x', 'file://***@/x', s3://b/k@v]")
    assert check_uri("s3://b/p@x") == "s3://b/p@x"
    assert check_uri("/tmp/a:b") == "/tmp/a:b"  # a colon inside a local path is fine


def test_the_filesystem_root_is_refused() -> None:
    with pytest.raises(StorageError, match="filesystem root"):
        open_storage("/").check_output_root("job.json")
    with pytest.raises(StorageError, match="filesystem root"):
        open_storage("file:///").check_output_root("job.json")


def test_parents(store: Storage) -> None:
    child = store.child("a/b")
    assert child.parent().uri == store.child("a").uri
    assert child.parent().parent().uri == store.uri
    top = store
    while top.parent() is not None:
        top = top.parent()
    assert top.uri in ("/", f"s3://{store.uri[5:].split('/')[0]}")


def test_an_output_inside_another_jobs_output_is_refused(store: Storage) -> None:
    store.write_bytes("job-a/job.json", b"{}")
    store.write_bytes("job-a/stats/job_id=x/shard=00000/part-0.parquet", b"x")
    for inside in ("job-a/stats", "job-a/stats/job_id=x", "job-a/images/more"):
        with pytest.raises(StorageError, match="inside the output of another job") as e:
            store.child(inside).check_output_root("job.json")
        assert store.join("job-a/job.json") in str(e.value)
    store.child("job-b").check_output_root("job.json")  # a sibling is fine
    store.child("job-a").check_output_root("job.json")  # and the job's own root (a rerun)
    assert not any(k.startswith(("job-b/", "job-a/_probe")) for k in store.list())  # the probe tidied up


def test_a_full_disk_is_named_with_the_fix_and_leaves_no_partial_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "256k") as root:
        store = open_storage(str(root))
        store.write_bytes("fits.bin", b"x" * 1000)
        with pytest.raises(StorageError) as e:
            store.write_bytes("images/big.png", os.urandom(1024 * 1024))
        assert f"{root}/images/big.png" in str(e.value) and "the disk is full" in str(e.value)
        assert "ENOSPC" in str(e.value)
        assert store.list() == ["fits.bin"] and os.listdir(root / "images") == []  # no temporary file
        with pytest.raises(StorageError, match="disk is full"):  # a create-only marker too
            store.write_bytes("_commits/big.json", os.urandom(1024 * 1024), if_absent=True)
        assert not store.exists("_commits/big.json")
        store.delete("fits.bin")
        store.write_bytes("again.bin", b"y" * 1000)  # the space came back: nothing was held


def test_a_read_only_disk_is_named_with_the_fix(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro") as root:
        store = open_storage(str(root))
        store.write_bytes("kept.txt", b"x")
        remount_read_only(root)
        for call in (lambda: store.write_bytes("new.txt", b"y"), lambda: store.delete("kept.txt"),
                     lambda: store.check_output_root("job.json")):
            with pytest.raises(StorageError, match="read-only: choose a writable output.uri"):
                call()
        assert store.read_bytes("kept.txt") == b"x"


def test_permission_denied_is_named_with_the_fix(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    code = ("import sys; from sjd_batch.io.storage import StorageError\n"
            "from sjd_batch.io.backends import open_storage\n"
            "try:\n    open_storage(sys.argv[1]).write_bytes('sub/x.png', b'x')\n"
            "except StorageError as e:\n    print(e)\n")
    out = subprocess.run(without_permission_override([sys.executable, "-c", code, str(locked)]),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr  # a StorageError, not a traceback
    assert f"{locked}/sub" in out.stdout and "permission denied" in out.stdout
    assert "chmod/chown) or choose another output.uri" in out.stdout
