"""One code path for a local folder and an S3 prefix: the `Storage` interface, its errors and key rules.

A `Storage` is rooted at a URI (`/tmp/out`, `file:///tmp/out` or `s3://bucket/prefix`) and speaks in
*keys*: `/`-separated paths relative to that root (`stats/job_id=a/shard=00001/part-0.parquet`).
`io.backends.open_storage` picks the backend: `storage_local.LocalStorage` (a folder) or
`storage_s3.S3Storage`, which build on this module (it never imports them). These three modules are the
only ones that import boto3 / pyarrow.fs; everything else goes through here.

S3 settings come from the standard AWS environment and config files, exactly as boto3 resolves them
(`AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`, `AWS_REGION` / `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_PROFILE`, ...), so MinIO, Ceph, R2 and SeaweedFS work unchanged. pyarrow's filesystem is built
from the same resolved endpoint, region and credentials, so both clients always talk to one store.

Transient errors (5xx, throttling, dropped connections) are retried by botocore's adaptive retry mode,
`RetryPolicy.botocore_attempts` requests per call. Our own backoff around a whole operation covers only
what botocore does not retry (a body that broke off while streaming, 409 conflicts), so one call never
makes more than `botocore_attempts` requests for an error botocore retries.
Credentials are never logged, never put in an error message and never pickled. A URI that carries
them (`s3://KEY:SECRET@bucket`) is refused, with the secret left out of the message: they would end up
in logs, job files and Ray's job table. They come from the AWS environment only.
"""

from __future__ import annotations

import errno
import os
import random
import re
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow.fs


class StorageError(Exception):
    """An IO failure, with the URI or key involved and what was expected. Base of all IO-layer errors."""


class ObjectNotFound(StorageError, FileNotFoundError):
    """The key does not exist (a missing local file or an S3 `NoSuchKey`)."""


# `s3:/b/x`, `s3:b/x`, `file:/x`: a known scheme without `//` would silently be a local folder `s3:`.
_HALF_SCHEME = re.compile(r"^(s3|s3a|s3n|gs|gcs|az|abfss?|hdfs|https?|file):(?!//)", re.IGNORECASE)
# userinfo: `KEY:SECRET@` or `TOKEN@` right after the scheme. A raw AWS secret may hold `/` (so the
# part before the first `/` can end early); a `:` there can only be a credential, never a bucket name.
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@]*|[^/@:]*:[^@]*)@")


_USERINFO_ANYWHERE = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)(?:[^/@\s'\"]*|[^/@:\s'\"]*:[^@\s'\"]*)@")


def redact_uri(uri: str) -> str:
    """Drop the userinfo of a URI (`s3://KEY:SECRET@bucket/p` -> `s3://***@bucket/p`)."""
    return _USERINFO.sub(r"\1***@", uri)


def scrub_credentials(text: str) -> str:
    """`redact_uri` for every URI inside a message (e.g. a validator that quotes the value it got)."""
    return _USERINFO_ANYWHERE.sub(r"\1***@", text)


def check_uri(uri: str) -> str:
    """Refuse a URI that would not mean what it says; messages never repeat a credential.

    - `s3:/bucket/x` (one slash): a local folder named `s3:` otherwise;
    - `s3://KEY:SECRET@bucket`: credentials belong in the AWS environment, not in a URI.
    """
    if _HALF_SCHEME.match(uri):
        scheme = uri.split(":", 1)[0]
        raise StorageError(f"{redact_uri(uri)!r} is not a valid URI: expected {scheme}://... (two slashes); "
                           "as written it would be a local folder")
    if _USERINFO.match(uri):
        raise StorageError(
            f"{redact_uri(uri)!r}: credentials in a URI are refused (they would end up in logs, job files "
            "and Ray's job table); set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE instead"
        )
    return uri


def local_error(path: str, e: OSError, what: str = "write") -> StorageError:
    """A StorageError for a failed local file operation: names the path, the cause and the fix."""
    fixes = {
        errno.ENOSPC: "the disk is full: free space or choose another output.uri",
        errno.EDQUOT: "the disk quota is exhausted: free space or choose another output.uri",
        errno.EROFS: "the filesystem is read-only: choose a writable output.uri",
        errno.EACCES: f"permission denied for user id {os.getuid()}: make the folder writable "
                      "(chmod/chown) or choose another output.uri",
        errno.EPERM: "operation not permitted: make the folder writable or choose another output.uri",
    }
    fix = fixes.get(e.errno, e.strerror or str(e))
    return StorageError(f"cannot {what} {path}: {fix} ({errno.errorcode.get(e.errno or 0, 'OSError')}); "
                        "committed shards are kept, and a rerun resumes")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry transient S3 errors.

    Attributes:
        botocore_attempts: botocore's `total_max_attempts` per request (adaptive mode): throttling, 5xx
            and dropped connections get this many requests in all (about a minute of backoff at 10).
            `AWS_MAX_ATTEMPTS` overrides the default.
        extra_attempts: our own retries of a whole operation, only for errors botocore does not retry
            (a response body that broke off, 409 conflicts, SeaweedFS's BadDigest on racing PUTs).
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
    """A root URI and key-based object IO. Build one with `io.backends.open_storage`."""

    uri: str

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
    def download_file(self, key: str, dest: str) -> None:
        """Copy one object to the local file `dest`, streamed (never whole in memory); on S3 a large
        object comes down in parallel ranged parts (s3transfer). `dest` appears only when complete."""

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

    @abstractmethod
    def parent(self) -> Storage | None:
        """The folder or prefix holding this root (sharing this one's client); None at the top
        (`/`, or the bucket itself)."""

    def check_output_root(self, marker: str) -> None:
        """Refuse a root no job may write to, before anything is written; `marker` is a job's own file.

        - the filesystem root `/` (a job run as root would scatter its folders there);
        - a folder or prefix inside another job's output (one of its parents holds `marker`): say a
          job's `stats/` folder, whose readers would take the new job's files for its own.
        Then check that the root is usable and that the store honours conditional writes, which
        exactly-once commits rely on.
        """
        if self.uri == "/":
            raise StorageError("output.uri '/' is the filesystem root: choose a folder of its own, "
                               "e.g. ./outputs/x")
        node = self.parent()
        while node is not None:
            if node.exists(marker):
                raise StorageError(
                    f"{self.uri} is inside the output of another job ({node.join(marker)} exists): a job's "
                    "output must not nest inside another's; choose an output.uri outside it"
                )
            node = node.parent()
        self.check_bucket()
        self.check_conditional_writes()

    def check_conditional_writes(self) -> None:
        """Fail loudly if the store ignores `if_absent` (some S3 clones ignore `If-None-Match`)."""
        # a top-level key: under a `_probe/` folder a local root kept the emptied folder behind
        key = f"_probe-{uuid.uuid4().hex}"
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


def arrow_error(uri: str, e: OSError) -> StorageError:
    """A StorageError for a failed pyarrow filesystem call on `uri`, with a hint for auth failures."""
    text = str(e)
    if any(code in text for code in ("ACCESS_DENIED", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")):
        return StorageError(
            f"cannot read {uri}: access denied; check the AWS credentials (AWS_ACCESS_KEY_ID / "
            f"AWS_SECRET_ACCESS_KEY / AWS_PROFILE) and the bucket policy ({text})"
        )
    return StorageError(f"cannot read {uri}: {text}")

