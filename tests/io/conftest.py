"""IO test fixtures: the same tests run on a local folder and on a real S3 bucket (SeaweedFS)."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path) -> Storage:
    """An empty Storage: a fresh local folder, or a prefix in a fresh S3 bucket."""
    if request.param == "local":
        return open_storage(str(tmp_path / "root"))
    return open_storage(f"s3://{request.getfixturevalue('bucket')}/root")


def put_parquet(storage: Storage, key: str, table: pa.Table, **kwargs: object) -> str:
    """Write `table` as Parquet at `key` and return the object's full URI."""
    sink = io.BytesIO()
    pq.write_table(table, sink, **kwargs)
    storage.write_bytes(key, sink.getvalue())
    return storage.join(key)
