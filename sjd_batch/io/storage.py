"""One code path for a local folder and an S3 prefix: the only module that imports boto3 / pyarrow.fs.

A `Storage` is rooted at a URI (`/tmp/out`, `file:///tmp/out` or `s3://bucket/prefix`) and speaks in
*keys*: `/`-separated paths relative to that root (`stats/job_id=a/shard=00001/part-0.parquet`).

S3 settings come from the standard AWS environment and config files, exactly as boto3 resolves them
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_PROFILE`, ...), so MinIO, Ceph, R2 and SeaweedFS work unchanged. pyarrow's filesystem is built
from the same resolved endpoint, region and credentials, so both clients always talk to one store.

Transient errors (5xx, throttling, dropped connections) are retried twice over: botocore's adaptive
retry mode first, then our own exponential backoff around each whole operation (`RetryPolicy`).
Credentials are never logged, never put in an error message and never pickled.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    import pyarrow.fs

log = logging.getLogger(__name__)
T = TypeVar("T")

# Error codes that mean "try again later" rather than "this request is wrong".
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ConditionalRequestConflict",  # racing conditional PUTs on AWS: retry, the loser then gets 412
        "OperationAborted",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken", "403"}
)
_TMP_MARK = ".sjdtmp-"  # local temporary files carry this in their name; `list` hides them


class StorageError(Exception):
    """An IO failure, with the URI or key involved and what was expected. Base of all IO-layer errors."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The key does not exist (a missing local file or an S3 `NoSuchKey`)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient S3 errors.

    Attributes:
        botocore_attempts: botocore's `total_max_attempts` per request (adaptive mode). `AWS_MAX_ATTEMPTS`
            overrides the default.
        extra_attempts: our own retries of a whole operation after botocore gave up on a transient error.
        backoff_s: first backoff of our retries; doubled each time, with full jitter.
        max_backoff_s: cap of one backoff.
    """

    botocore_attempts: int = 10
    extra_attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    @staticmethod
    def from_env() -> RetryPolicy:
        """The default policy, with `AWS_MAX_ATTEMPTS` honoured as botocore does."""
        attempts = os.environ.get("AWS_MAX_ATTEMPTS")
        return RetryPolicy(botocore_attempts=int(attempts)) if attempts else RetryPolicy()

    def sleep_s(self, attempt: int) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (0-based)."""
        return random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))


def check_key(key: str, allow_empty: bool = False) -> str:
    """Reject keys that could escape the root or are not portable between S3 and a local folder."""
    if not key:
        if allow_empty:
            return key
        raise StorageError("empty key: expected a relative path such as 'images/x.png'")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"invalid key {key!r}: expected a relative '/'-separated path without '.' or '..'")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix is a key, or a key's start (it may end with `/` or be empty)."""
    if prefix:
        check_key(prefix.rstrip("/") or "/")
    return prefix


def split_uri(uri: str) -> tuple[str, str]:
    """`s3://b/p/f.parquet` -> (`s3://b/p`, `f.parquet`); a bare bucket has no name (`""`)."""
    body = uri.rstrip("/")
    if body.startswith("s3://"):
        bucket, _, rest = body[5:].partition("/")
        head, _, name = rest.rpartition("/")
        return (f"s3://{bucket}/{head}" if head else f"s3://{bucket}"), name
    path = os.path.abspath(os.path.expanduser(body.removeprefix("file://")))
    return os.path.dirname(path), os.path.basename(path)


class Storage(ABC):
    """A root URI and key-based object IO. Build one with `Storage.from_uri`."""

    uri: str

    @staticmethod
    def from_uri(uri: str, *, endpoint_url: str | None = None, retry: RetryPolicy | None = None) -> Storage:
        """A `Storage` for a local path, a `file://` URI or an `s3://bucket[/prefix]` URI.

        Args:
            uri: the root.
            endpoint_url: S3 only: overrides the endpoint from the environment (tests, proxies).
            retry: S3 only: the retry policy; `RetryPolicy.from_env()` by default.
        """
        if uri.startswith("s3://"):
            return S3Storage(uri, endpoint_url=endpoint_url, retry=retry or RetryPolicy.from_env())
        if "://" in uri and not uri.startswith("file://"):
            raise StorageError(f"unsupported URI {uri!r}: expected a local path, file:// or s3://")
        return LocalStorage(uri.removeprefix("file://"))

    def join(self, key: str) -> str:
        """The full URI of a key under this root."""
        check_prefix(key)
        return f"{self.uri.rstrip('/')}/{key}" if key else self.uri

    @abstractmethod
    def child(self, key: str) -> Storage:
        """A `Storage` rooted at `key` under this root (sharing this one's client)."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` if it does not exist."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        """Write atomically (readers see the old object or the new one, never a part).

        With `if_absent`, create only if the key does not exist yet and return False (content unchanged)
        if it does. On S3 a 412 can also answer our own retried PUT whose first reply was lost, so False
        means "an object is there", which is what exactly-once commit markers need.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object (not a folder or prefix) exists at `key`."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key under the root that starts with `prefix` (recursive), relative to the root, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; deleting a missing key is not an error (S3 semantics)."""

    @abstractmethod
    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """(pyarrow filesystem, root path on it) for `pyarrow.dataset` and `pyarrow.parquet`."""

    @abstractmethod
    def check_bucket(self) -> None:
        """Raise `StorageError` if the root cannot be used (missing bucket, wrong credentials, a file)."""

    def abort_multipart_uploads(self) -> int:
        """Abort unfinished multipart uploads under the root (S3); returns how many were aborted."""
        return 0

    def check_conditional_writes(self) -> None:
        """Fail loudly if the store ignores `if_absent` (some S3 clones ignore `If-None-Match`)."""
        key = f"_probe/{uuid.uuid4().hex}"
        try:
            self.write_bytes(key, b"1", if_absent=True)
            if self.write_bytes(key, b"2", if_absent=True) or self.read_bytes(key) != b"1":
                raise StorageError(
                    f"{self.uri} ignores conditional writes (If-None-Match: *): exactly-once needs them"
                )
        finally:
            self.delete(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalStorage(Storage):
    """A local folder. Writes go to a temporary file first, then are renamed or linked into place."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.uri = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def child(self, key: str) -> LocalStorage:
        return LocalStorage(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"{path} does not exist") from None
        except IsADirectoryError:
            raise StorageError(f"{path} is a folder, expected a file") from None

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        path = self._path(key)
        folder, name = os.path.split(path)
        try:
            os.makedirs(folder, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(f"cannot write {path}: a parent of it is a file") from None
        tmp = os.path.join(folder, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the content is on disk before the name points at it
            return _link_into_place(tmp, path) if if_absent else _rename_into_place(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the folder the prefix names, then filter by string prefix, as S3 does.
        check_prefix(prefix)
        start = os.path.join(self.root, *prefix.split("/")[:-1]) if "/" in prefix else self.root
        keys = []
        for folder, _dirs, files in os.walk(start):
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if _TMP_MARK not in name and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), self.root

    def check_bucket(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise StorageError(
                f"{self.root} is a file, expected a folder (or a path that does not exist yet)"
            )


def _rename_into_place(tmp: str, path: str) -> bool:
    try:
        os.replace(tmp, path)
    except IsADirectoryError:
        raise StorageError(f"cannot write {path}: it is a folder") from None
    return True


def _link_into_place(tmp: str, path: str) -> bool:
    """Atomic create: a hard link fails if `path` exists, and never exposes a partial file."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        pass  # a filesystem without hard links: fall back to O_EXCL (exclusive, not atomic content)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f, open(tmp, "rb") as src:
        f.write(src.read())
    return True


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

    def _call(self, what: str, key: str | None, fn: Callable[[], T]) -> T:
        """Run one S3 operation with our backoff on transient errors, translating errors to StorageError."""
        where = f"{self.uri.rstrip('/')}/{key}" if key else self.uri
        for attempt in range(self.retry.extra_attempts + 1):
            try:
                return fn()
            except Exception as e:  # classified below and re-raised as a StorageError
                if not _is_transient(e) or attempt == self.retry.extra_attempts:
                    raise _translate(e, what, where, self) from e
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
        return self._call(
            "read", key, lambda: self.client.get_object(Bucket=self.bucket, Key=k)["Body"].read()
        )

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


def arrow_error(uri: str, e: OSError) -> StorageError:
    """A StorageError for a failed pyarrow filesystem call on `uri`, with a hint for auth failures."""
    text = str(e)
    if any(code in text for code in ("ACCESS_DENIED", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")):
        return StorageError(
            f"cannot read {uri}: access denied; check the AWS credentials (AWS_ACCESS_KEY_ID / "
            f"AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and the bucket policy ({text})"
        )
    return StorageError(f"cannot read {uri}: {text}")


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


def _is_transient(e: BaseException) -> bool:
    import botocore.exceptions as bx

    if isinstance(e, (bx.ConnectionError, bx.HTTPClientError, bx.ResponseStreamingError)):
        return True  # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, dropped connections
    response = getattr(e, "response", None)
    status = (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(response, dict) else 0
    )
    return _error_code(e) in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)


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
