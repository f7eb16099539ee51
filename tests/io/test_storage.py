"""Storage on a local folder and on a real S3 server: round trips, conditional writes, errors, retries."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import ObjectNotFound, RetryPolicy, Storage, StorageError, split_uri
from sjd_batch.io.storage_local import LocalStorage
from sjd_batch.io.storage_s3 import S3Storage

FAST_RETRY = RetryPolicy(botocore_attempts=1, extra_attempts=4, backoff_s=0.01, max_backoff_s=0.05)


def test_round_trip_and_overwrite(store: Storage) -> None:
    data = bytes(range(256)) * 100
    assert store.write_bytes("a/b/c.bin", data) is True
    assert store.read_bytes("a/b/c.bin") == data
    assert store.write_bytes("a/b/c.bin", b"new") is True  # a plain write replaces
    assert store.read_bytes("a/b/c.bin") == b"new"
    assert store.write_bytes("empty", b"") and store.read_bytes("empty") == b""


def test_if_absent_creates_once_and_keeps_the_first_content(store: Storage) -> None:
    assert store.write_bytes("_commits/shard=00001.json", b"first", if_absent=True) is True
    assert store.write_bytes("_commits/shard=00001.json", b"second", if_absent=True) is False
    assert store.read_bytes("_commits/shard=00001.json") == b"first"
    assert store.list() == ["_commits/shard=00001.json"]  # no temporary files left behind


def test_if_absent_race_has_exactly_one_winner(store: Storage) -> None:
    wins: list[bytes] = []
    barrier = threading.Barrier(6)

    def writer(i: int) -> None:
        barrier.wait()
        if store.write_bytes("marker", f"w{i}".encode(), if_absent=True):
            wins.append(f"w{i}".encode())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and store.read_bytes("marker") == wins[0]


def test_exists_list_delete(store: Storage) -> None:
    for key in ["stats/b.parquet", "stats/a/x.parquet", "images/1.png", "job.json"]:
        store.write_bytes(key, b"x")
    assert store.list() == ["images/1.png", "job.json", "stats/a/x.parquet", "stats/b.parquet"]
    assert store.list("stats/") == ["stats/a/x.parquet", "stats/b.parquet"]
    assert store.list("stats/a") == ["stats/a/x.parquet"]  # a string prefix, as on S3
    assert store.list("nothing/") == []
    assert store.exists("job.json") and not store.exists("nope.json")
    assert not store.exists("stats")  # a folder / common prefix is not an object
    store.delete("job.json")
    store.delete("job.json")  # deleting a missing key is fine
    assert not store.exists("job.json") and "job.json" not in store.list()


def test_read_missing_key_names_it(store: Storage) -> None:
    with pytest.raises(ObjectNotFound, match="missing.bin") as e:
        store.read_bytes("missing.bin")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, StorageError)


def test_child_and_join(store: Storage) -> None:
    child = store.child("out/job1")
    child.write_bytes("k.txt", b"v")
    assert store.read_bytes("out/job1/k.txt") == b"v"
    assert child.uri == store.join("out/job1")
    assert child.join("k.txt") == store.join("out/job1/k.txt")
    assert open_storage(child.uri).read_bytes("k.txt") == b"v"


@pytest.mark.parametrize("key", ["", "/abs", "../up", "a/../b", "a//b", "a/", "a\\b", "./a"])
def test_invalid_keys_are_refused(store: Storage, key: str) -> None:
    with pytest.raises(StorageError, match="key"):
        store.write_bytes(key, b"x")


def test_arrow_filesystem_sees_the_same_objects(store: Storage) -> None:
    store.write_bytes("d/keep.txt", b"x")  # creates the local folder too
    fs, root = store.arrow_filesystem()
    pq.write_table(pa.table({"x": [1, 2]}), f"{root}/d/t.parquet", filesystem=fs)
    assert store.list("d/") == ["d/keep.txt", "d/t.parquet"]
    assert pq.read_table(f"{root}/d/t.parquet", filesystem=fs).column("x").to_pylist() == [1, 2]


def test_pickles_for_ray(store: Storage) -> None:
    store.write_bytes("k", b"v")  # the S3 client exists now and must not be pickled
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri and clone.read_bytes("k") == b"v"


def test_check_bucket_and_conditional_write_probe(store: Storage) -> None:
    store.check_bucket()
    store.check_conditional_writes()
    assert store.list() == []  # the probe cleans up
    assert store.abort_multipart_uploads() == 0


def test_open_storage_forms(tmp_path) -> None:
    assert isinstance(open_storage(f"file://{tmp_path}"), LocalStorage)
    assert open_storage(f"file://{tmp_path}").uri == str(tmp_path)
    assert open_storage("s3://b/p/").uri == "s3://b/p"
    assert isinstance(open_storage("s3://b"), S3Storage)
    with pytest.raises(StorageError, match="gs://x"):
        open_storage("gs://x/y")
    with pytest.raises(StorageError, match="s3://bucket"):
        open_storage("s3:///nobucket")


def test_split_uri() -> None:
    assert split_uri("s3://b/p/f.parquet") == ("s3://b/p", "f.parquet")
    assert split_uri("s3://b/f.parquet") == ("s3://b", "f.parquet")
    assert split_uri("s3://b/") == ("s3://b", "")
    assert split_uri("/x/y.parquet") == ("/x", "y.parquet")


def test_local_root_that_is_a_file(tmp_path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(StorageError, match="is a file"):
        open_storage(str(tmp_path / "f")).check_bucket()


def test_local_list_hides_temporary_files(tmp_path) -> None:
    store = open_storage(str(tmp_path))
    store.write_bytes("a.txt", b"x")
    (tmp_path / ".a.txt.sjdtmp-dead").write_bytes(b"partial")  # left by a killed writer
    assert store.list() == ["a.txt"]


def test_local_delete_removes_the_folders_it_empties_but_never_the_root(tmp_path) -> None:
    root = tmp_path / "out"
    store = open_storage(str(root))
    for key in ["_partial/shard=00000/a.json", "_partial/shard=00001/b.json", "job.json"]:
        store.write_bytes(key, b"x")
    store.delete("_partial/shard=00000/a.json")
    assert not (root / "_partial" / "shard=00000").exists() and (root / "_partial" / "shard=00001").is_dir()
    store.delete("_partial/shard=00001/b.json")
    assert not (root / "_partial").exists()  # what a finished job's partials leave: nothing
    store.delete("job.json")
    assert root.is_dir() and list(root.iterdir()) == []
    store.write_bytes("_partial/shard=00000/a.json", b"y")  # and a pruned folder comes back on write
    assert store.read_bytes("_partial/shard=00000/a.json") == b"y"


def test_local_writes_survive_concurrent_deletes_pruning_their_folder(tmp_path) -> None:
    """Two writers under one parent, each deleting what it wrote: a delete prunes the shared parent
    while the other writer is between making its folder and creating its file."""
    store = open_storage(str(tmp_path))
    errors: list[BaseException] = []

    def churn(shard: int) -> None:
        try:
            for i in range(300):
                store.write_bytes(f"p/q/shard={shard}/{i}.json", b"x")
                store.delete(f"p/q/shard={shard}/{i}.json")
        except BaseException as e:  # noqa: B036 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=churn, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert list(tmp_path.iterdir()) == []


# --- S3 only ------------------------------------------------------------------------------------


@pytest.mark.s3
def test_missing_bucket_is_named(s3_endpoint: str) -> None:
    store = open_storage("s3://no-such-bucket-sjd/out")
    for call in (store.check_bucket, store.list, lambda: store.write_bytes("k", b"v")):
        with pytest.raises(StorageError, match="bucket 'no-such-bucket-sjd' does not exist"):
            call()


@pytest.mark.s3
@pytest.mark.parametrize("var", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_wrong_credentials_give_a_clear_error_without_secrets(bucket, monkeypatch, var: str) -> None:
    monkeypatch.setenv(var, "wrong-value-123")
    store = open_storage(f"s3://{bucket}")
    for call in (store.check_bucket, store.list, lambda: store.write_bytes("k", b"v")):
        with pytest.raises(StorageError, match="access denied") as e:
            call()
        assert bucket in str(e.value)
        assert "wrong-value-123" not in str(e.value) and "testsecret" not in str(e.value)


@pytest.mark.s3
def test_no_credentials_at_all(bucket, monkeypatch, tmp_path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StorageError, match="no AWS credentials"):
        open_storage(f"s3://{bucket}").check_bucket()


@pytest.mark.s3
def test_endpoint_comes_from_the_environment(bucket, s3_client, monkeypatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_client.meta.endpoint_url)
    store = open_storage(f"s3://{bucket}/p")
    store.write_bytes("x.txt", b"hello")
    assert s3_client.get_object(Bucket=bucket, Key="p/x.txt")["Body"].read() == b"hello"


@pytest.mark.s3
def test_abort_multipart_uploads_under_the_root_only(bucket, s3_client) -> None:
    mine = s3_client.create_multipart_upload(Bucket=bucket, Key="job/images/big.tar")
    other = s3_client.create_multipart_upload(Bucket=bucket, Key="elsewhere/x")
    assert open_storage(f"s3://{bucket}/job").abort_multipart_uploads() == 1
    left = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["UploadId"] for u in left] == [other["UploadId"]] != [mine["UploadId"]]


@pytest.mark.s3
def test_transient_errors_are_retried_by_botocore(bucket, flaky_proxy) -> None:
    proxy = flaky_proxy(fail_first=3)
    store = open_storage(f"s3://{bucket}", endpoint_url=proxy.url)
    assert store.write_bytes("k", b"v", if_absent=True) is True
    assert store.read_bytes("k") == b"v" and proxy.failed == 3
    assert [s for _, _, s in proxy.log[:4]] == [503, 503, 503, 200]


@pytest.mark.s3
@pytest.mark.parametrize("code", ["ConditionalRequestConflict", "BadDigest"])
def test_errors_botocore_does_not_retry_are_retried_by_our_backoff(bucket, flaky_proxy, code: str) -> None:
    # 409 conflicts and SeaweedFS's BadDigest on racing conditional PUTs: botocore gives up at once
    status = 409 if code != "BadDigest" else 400
    proxy = flaky_proxy(fail_first=2, methods=("PUT",), status=status, code=code)
    # botocore keeps 3 attempts for what it does retry: SeaweedFS itself sometimes answers a PUT
    # with a 500 InternalError, which must not count against this test's two injected errors
    policy = RetryPolicy(botocore_attempts=3, extra_attempts=4, backoff_s=0.01, max_backoff_s=0.05)
    store = open_storage(f"s3://{bucket}", endpoint_url=proxy.url, retry=policy)
    assert store.write_bytes("k", b"v", if_absent=True) is True
    assert proxy.failed == 2 and store.read_bytes("k") == b"v"
    puts = [s for m, _, s in proxy.log if m == "PUT"]
    assert puts[:2] == [status] * 2 and puts[-1] == 200  # botocore gave up on each at once: ours retried


@pytest.mark.s3
def test_a_body_that_breaks_off_is_read_again(bucket, flaky_proxy) -> None:
    data = bytes(range(256)) * 64
    open_storage(f"s3://{bucket}").write_bytes("k", data)
    proxy = flaky_proxy(fail_first=2, methods=("GET",), truncate=True)
    store = open_storage(f"s3://{bucket}", endpoint_url=proxy.url, retry=FAST_RETRY)
    assert store.read_bytes("k") == data and proxy.failed == 2


@pytest.mark.s3
def test_persistent_errors_surface_after_botocores_attempts_only(bucket, flaky_proxy) -> None:
    """Our retry loop must not multiply botocore's: a persistent 503 costs `botocore_attempts`
    requests in all (it cost botocore_attempts x (extra_attempts + 1) before, 50 by default)."""
    proxy = flaky_proxy(fail_first=1000)
    policy = RetryPolicy(botocore_attempts=3, extra_attempts=4, backoff_s=0.01)
    store = open_storage(f"s3://{bucket}/p", endpoint_url=proxy.url, retry=policy)
    with pytest.raises(StorageError, match=rf"s3://{bucket}/p/k.*ServiceUnavailable"):
        store.read_bytes("k")
    assert proxy.failed == 3 == proxy.requests


@pytest.mark.s3
def test_arrow_filesystem_retries_through_the_proxy(bucket, flaky_proxy) -> None:
    open_storage(f"s3://{bucket}").write_bytes("d/t.parquet", _parquet_bytes())
    proxy = flaky_proxy(fail_first=2)
    fs, root = open_storage(f"s3://{bucket}", endpoint_url=proxy.url).arrow_filesystem()
    assert pq.read_table(f"{root}/d/t.parquet", filesystem=fs).num_rows == 3
    assert proxy.failed == 2


def test_retry_policy_from_env(monkeypatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert RetryPolicy.from_env().botocore_attempts == 3
    assert 0 <= RetryPolicy().sleep_s(10) <= RetryPolicy().max_backoff_s


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"x": [1, 2, 3]}), sink)
    return sink.getvalue().to_pybytes()


def test_no_boto3_outside_storage() -> None:
    """storage.py and its backends are the only IO modules that import boto3, botocore or pyarrow.fs."""
    folder = Path(__file__).parents[2] / "sjd_batch" / "io"
    for path in folder.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
        forbidden = {m for m in imported if m.split(".")[0] in ("boto3", "botocore") or m == "pyarrow.fs"}
        allowed = path.name in ("storage.py", "storage_s3.py", "storage_local.py")
        assert not forbidden or allowed, f"{path.name} imports {forbidden}"


def test_importing_the_io_layer_loads_no_s3_client() -> None:
    """boto3 and pyarrow.fs load on first S3 use, not on import (importing has no side effects)."""
    code = (
        "import sys, sjd_batch.io.storage, sjd_batch.io.prompts, sjd_batch.io.results\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'pyarrow.fs', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
