"""Model folders on object storage, downloaded once per node into a local cache.

Several actors on one node may ask for the same `s3://` model at once: a file lock (`fcntl.flock`)
makes one of them download while the others wait, and a `.complete` marker written after an atomic
rename tells later callers the copy is whole. A half-finished download (a killed actor) leaves only a
temporary folder, which the next caller replaces.

Files are streamed to disk, never held in memory whole: a few at a time, and each large one in
parallel ranged parts (`Storage.download_file`, s3transfer on S3), so a 15 GB checkpoint costs the
actor neither 15 GB of RAM nor one slow serial stream.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage, StorageError

COMPLETE = ".complete"
PARALLEL_FILES = 4  # files downloaded at once (each large one also comes in parallel parts)


def cache_root() -> Path:
    """`$SJD_BATCH_CACHE`, else `~/.cache/sjd-batch`."""
    return Path(os.environ.get("SJD_BATCH_CACHE", Path.home() / ".cache" / "sjd-batch"))


def fetch_model(uri: str, root: Path | None = None) -> Path:
    """Return a local folder holding every object under the model prefix `uri`, downloading it once.

    Raises:
        StorageError: when the prefix is empty or unreadable, or the cache disk is full (the message
            names the URI or the path).
    """
    folder = (root or cache_root()) / "models" / hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()
    if (folder / COMPLETE).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{folder}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first actor downloads; the others wait here
        if not (folder / COMPLETE).exists():
            _download(open_storage(uri), folder)
    return folder


def _download(storage: Storage, folder: Path) -> None:
    keys = storage.list()
    if not keys:
        raise StorageError(f"model {storage.uri}: no objects under this prefix; expected a model folder")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for key in keys:
        (tmp / key).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(PARALLEL_FILES, thread_name_prefix="model-download") as pool:
        list(pool.map(lambda key: storage.download_file(key, str(tmp / key)), keys))  # re-raises
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    (folder / COMPLETE).touch()
