"""`open_storage(uri)`: the one place that picks a `Storage` backend for a URI.

`storage.py` holds the interface, its errors and the URI rules; the backends (`storage_local.py`,
`storage_s3.py`) build on it, and this module sits above all three. Keeping the factory out of
`storage.py` is what keeps the import graph acyclic: the interface never needs to know its backends.
"""

from __future__ import annotations

from sjd_batch.io.storage import RetryPolicy, Storage, StorageError, check_uri
from sjd_batch.io.storage_local import LocalStorage
from sjd_batch.io.storage_s3 import S3Storage


def open_storage(uri: str, *, endpoint_url: str | None = None, retry: RetryPolicy | None = None) -> Storage:
    """A `Storage` for a local path, a `file://` URI or an `s3://bucket[/prefix]` URI.

    Args:
        uri: the root.
        endpoint_url: S3 only: overrides the endpoint from the environment (tests, proxies).
        retry: S3 only: the retry policy; `RetryPolicy.from_env()` by default.
    """
    check_uri(uri)
    if uri.startswith("s3://"):
        return S3Storage(uri, endpoint_url=endpoint_url, retry=retry or RetryPolicy.from_env())
    if "://" in uri and not uri.startswith("file://"):
        raise StorageError(f"unsupported URI {uri!r}: expected a local path, file:// or s3://")
    return LocalStorage(uri.removeprefix("file://"))
