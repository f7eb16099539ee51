"""`S3Storage`: the `Storage` backend for an `s3://bucket/prefix` root, through boto3 and pyarrow.fs.

Also here: the shared boto3 client cache (`_connect`) and the classification of botocore errors into
transient (retried with `RetryPolicy` backoff) and permanent ones, translated to `StorageError`s that name
the URI and never include credentials.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from sjd_batch.io.storage import ObjectNotFound, RetryPolicy, Storage, StorageError, check_key, check_prefix

if TYPE_CHECKING:
    import pyarrow.fs

log = logging.getLogger(__name__)
DOWNLOAD_PART = 16 * 1024**2  # `download_file` fetches larger objects in parallel parts of this size
T = TypeVar("T")

# Error codes that mean "try again" and that botocore does not retry itself (it retries throttling,
# RequestTimeout, 5xx and dropped connections: counting those again here would multiply its attempts).
_OUR_RETRY_CODES = frozenset(
    {
        "ConditionalRequestConflict",  # racing conditional PUTs on AWS: retry, the loser then gets 412
        "OperationAborted",  # a conflicting operation on the same bucket or key is in progress
        "RequestTimeTooSkewed",
        # SeaweedFS answers a conditional PUT that races another one with BadDigest (seen with 4.48);
        # for any PUT it means the body was damaged on the way. Retrying gives 412 to the loser.
        "BadDigest",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
)


class S3Storage(Storage):
    """An `s3://bucket/prefix` root, through boto3 (objects) and pyarrow (datasets)."""

    def __init__(self, uri: str, *, endpoint_url: str | None, retry: RetryPolicy, conn: Any = None) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise StorageError(f"invalid S3 URI {uri!r}: expected s3://bucket[/prefix]")
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.bucket, self.prefix = bucket, (prefix + "/" if prefix else "")
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self.endpoint_url, self.retry = endpoint_url, retry
        self._conn = conn  # (boto3 session, client), made on first use

    def __getstate__(self) -> dict[str, Any]:
        # boto3 clients do not pickle (Ray ships Storage objects to actors): rebuild on first use.
        return {**self.__dict__, "_conn": None}

    @property
    def client(self) -> Any:
        if self._conn is None:
            self._conn = _connect(self.endpoint_url, self.retry)
        return self._conn[1]

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def child(self, key: str) -> S3Storage:
        return S3Storage(self.join(key), endpoint_url=self.endpoint_url, retry=self.retry, conn=self._conn)

    def parent(self) -> S3Storage | None:
        if not self.prefix:
            return None  # the bucket itself
        head = self.uri.rsplit("/", 1)[0]
        return S3Storage(head, endpoint_url=self.endpoint_url, retry=self.retry, conn=self._conn)

    def _call(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run one S3 operation, retrying (with our backoff) only what botocore does not retry itself;
        errors become StorageErrors that name the URI."""
        where = f"{self.uri.rstrip('/')}/{key}" if key else self.uri
        for attempt in range(self.retry.extra_attempts + 1):
            try:
                return fn()
            except Exception as e:  # classified below and re-raised as a StorageError
                if not _ours_to_retry(e) or attempt == self.retry.extra_attempts:
                    raise _translate(_unwrap(e), what, where, self) from _unwrap(e)
                delay = self.retry.sleep_s(attempt)
                log.warning(
                    "transient S3 error on %s %s (%s); retry %d in %.2fs",
                    what,
                    where,
                    _error_code(e) or type(e).__name__,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def read_bytes(self, key: str) -> bytes:
        k = self._key(key)
        return self._call("read", key, lambda: _read_body(self.client.get_object(Bucket=self.bucket, Key=k)))

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        k = self._key(key)
        try:
            self._call(
                "write", key, lambda: self.client.put_object(Bucket=self.bucket, Key=k, Body=data, **extra)
            )
        except StorageError as e:
            if if_absent and _error_code(e.__cause__) in ("PreconditionFailed", "412"):
                return False
            raise
        return True

    def download_file(self, key: str, dest: str) -> None:
        from boto3.s3.transfer import TransferConfig

        # s3transfer: parts of DOWNLOAD_PART bytes in parallel, streamed to a temporary file that is
        # renamed to `dest` once whole, with at most 16 chunks of 256 KiB waiting for the disk (4 MiB,
        # whatever the file's size); it re-reads a part whose body broke off and botocore retries each
        # request, so `_call` adds no retries of its own here.
        config = TransferConfig(multipart_threshold=DOWNLOAD_PART, multipart_chunksize=DOWNLOAD_PART,
                                max_concurrency=8, max_io_queue=16)
        k = self._key(key)
        self._call("download", key, lambda: self.client.download_file(self.bucket, k, dest, Config=config))

    def exists(self, key: str) -> bool:
        k = self._key(key)
        try:
            self._call("stat", key, lambda: self.client.head_object(Bucket=self.bucket, Key=k))
        except ObjectNotFound:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        full = self.prefix + check_prefix(prefix)

        def pages() -> list[str]:
            paginator = self.client.get_paginator("list_objects_v2")
            return [
                o["Key"]
                for p in paginator.paginate(Bucket=self.bucket, Prefix=full)
                for o in p.get("Contents", [])
            ]

        keys = self._call("list", prefix or None, pages)
        return sorted(k[len(self.prefix) :] for k in keys if not k.endswith("/"))

    def delete(self, key: str) -> None:
        k = self._key(key)
        self._call("delete", key, lambda: self.client.delete_object(Bucket=self.bucket, Key=k))

    def check_bucket(self) -> None:
        self._call("check bucket", None, lambda: self.client.head_bucket(Bucket=self.bucket))

    def abort_multipart_uploads(self) -> int:
        def abort_all() -> int:
            paginator = self.client.get_paginator("list_multipart_uploads")
            uploads = [
                u
                for p in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
                for u in p.get("Uploads", [])
            ]
            for u in uploads:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"])
            return len(uploads)

        return self._call("abort multipart uploads", None, abort_all)

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        client = self.client
        creds = self._conn[0].get_credentials()  # the very credentials boto3 resolved
        frozen = creds.get_frozen_credentials() if creds is not None else None
        kwargs: dict[str, Any] = {
            "region": client.meta.region_name or "us-east-1",
            "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(
                max_attempts=self.retry.botocore_attempts
            ),
        }
        if frozen is None:
            kwargs["anonymous"] = True
        else:
            kwargs.update(
                access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token
            )
        endpoint = client.meta.endpoint_url
        if not _is_aws_endpoint(endpoint):
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
        root = f"{self.bucket}/{self.prefix}".rstrip("/")
        return pyarrow.fs.S3FileSystem(**kwargs), root


_CONNECTIONS: dict[tuple, tuple[Any, Any]] = {}
_CONNECTIONS_LOCK = threading.Lock()


def _connect(endpoint_url: str | None, retry: RetryPolicy) -> tuple[Any, Any]:
    """A (boto3 session, S3 client) pair, shared per endpoint, retry policy and AWS environment.

    Making a client costs ~150 ms (botocore loads its endpoint rules), so Storages that only differ in
    their root share one; clients are thread-safe. The AWS_* environment is part of the cache key, so a
    changed endpoint or credentials in the environment get a new client.
    """
    key = (endpoint_url, retry, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    with _CONNECTIONS_LOCK:
        if key not in _CONNECTIONS:
            _CONNECTIONS[key] = _new_connection(endpoint_url, retry)
        return _CONNECTIONS[key]


def _new_connection(endpoint_url: str | None, retry: RetryPolicy) -> tuple[Any, Any]:
    import boto3
    import botocore.config

    config = botocore.config.Config(
        retries={"mode": "adaptive", "total_max_attempts": retry.botocore_attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,  # the worker uploads images from a thread pool
    )
    # endpoint_url=None lets boto3 read AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / the config file itself.
    session = boto3.session.Session()
    return session, session.client("s3", endpoint_url=endpoint_url, config=config)


def _is_aws_endpoint(url: str) -> bool:
    host = url.partition("://")[2].split("/")[0].split(":")[0]
    return host.endswith(".amazonaws.com") or host.endswith(".amazonaws.com.cn")


def _error_code(e: BaseException | None) -> str:
    """The S3 error code of a botocore ClientError (or its HTTP status for body-less HEAD errors)."""
    response = getattr(e, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str(response.get("Error", {}).get("Code", ""))
    return code or str(response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))


class _BodyBroken(Exception):
    """A response body that broke off while we read it: botocore had returned, so it cannot retry."""


def _read_body(response: dict[str, Any]) -> bytes:
    import botocore.exceptions as bx

    try:
        return response["Body"].read()
    except (bx.ResponseStreamingError, bx.ConnectionError, bx.HTTPClientError) as e:
        raise _BodyBroken(str(e)) from e


def _unwrap(e: BaseException) -> BaseException:
    return e.__cause__ if isinstance(e, _BodyBroken) and e.__cause__ is not None else e


def _ours_to_retry(e: BaseException) -> bool:
    """Errors botocore does not retry but a second try may fix; every other transient error has
    already had botocore's `total_max_attempts` requests."""
    return isinstance(e, _BodyBroken) or _error_code(e) in _OUR_RETRY_CODES


def _translate(e: BaseException, what: str, where: str, storage: S3Storage) -> StorageError:
    """A StorageError that names the URI and says what was expected; never includes credentials."""
    import botocore.exceptions as bx

    code = _error_code(e)
    endpoint = storage.endpoint_url or (storage._conn[1].meta.endpoint_url if storage._conn else "default")
    if isinstance(e, bx.NoCredentialsError):
        return StorageError(
            f"cannot {what} {where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
        )
    if code in ("NoSuchBucket",) or (code == "404" and what == "check bucket"):
        return StorageError(f"cannot {what} {where}: bucket {storage.bucket!r} does not exist at {endpoint}")
    if code in ("NoSuchKey", "404", "NotFound"):
        return ObjectNotFound(f"{where} does not exist")
    if code in _CREDENTIAL_CODES:
        return StorageError(
            f"cannot {what} {where}: access denied ({code}) at {endpoint}; check the AWS "
            "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and the "
            "bucket policy"
        )
    if isinstance(e, StorageError):
        return e
    return StorageError(f"cannot {what} {where} at {endpoint}: {code or type(e).__name__}: {e}")

