"""`LocalStorage`: the `Storage` backend for a local folder (atomic writes via temp file + rename/link)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from typing import TYPE_CHECKING, BinaryIO

from sjd_batch.io.storage import ObjectNotFound, Storage, StorageError, check_key, check_prefix, local_error

if TYPE_CHECKING:
    import pyarrow.fs

_TMP_MARK = ".sjdtmp-"  # local temporary files carry this in their name; `list` hides them
_CREATE_TRIES = 10  # a write whose new folder a concurrent delete removed makes it again, this many times
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


class LocalStorage(Storage):
    """A local folder. Writes go to a temporary file first, then are renamed or linked into place."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.uri = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def child(self, key: str) -> LocalStorage:
        return LocalStorage(self._path(key))

    def parent(self) -> LocalStorage | None:
        up = os.path.dirname(self.root)
        return LocalStorage(up) if up != self.root else None

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"{path} does not exist") from None
        except IsADirectoryError:
            raise StorageError(f"{path} is a folder, expected a file") from None
        except OSError as e:
            raise local_error(path, e, "read") from e

    def write_bytes(self, key: str, data: bytes, if_absent: bool = False) -> bool:
        path = self._path(key)
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".{name}{_TMP_MARK}{uuid.uuid4().hex}")
        try:
            with _create(path, tmp) as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the content is on disk before the name points at it
            return _link_into_place(tmp, path) if if_absent else _rename_into_place(tmp, path)
        except StorageError:
            raise
        except OSError as e:  # a full or read-only disk, a folder we may not write: say which and why
            raise local_error(path, e) from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a partial temporary file would hold the space a full disk needs

    def download_file(self, key: str, dest: str) -> None:
        path = self._path(key)
        tmp = f"{dest}{_TMP_MARK}{uuid.uuid4().hex}"
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except OSError as e:
            if not os.path.isfile(path):
                raise ObjectNotFound(f"{path} does not exist") from None
            raise local_error(e.filename or dest, e, "copy") from e
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def list(self, prefix: str = "") -> list[str]:
        # Walk only the folder the prefix names, then filter by string prefix, as S3 does.
        check_prefix(prefix)
        start = os.path.join(self.root, *prefix.split("/")[:-1]) if "/" in prefix else self.root
        keys = []

        def fail(e: OSError) -> None:  # os.walk would skip an unreadable folder silently
            if not isinstance(e, FileNotFoundError):
                raise local_error(e.filename or start, e, "list")

        for folder, _dirs, files in os.walk(start, onerror=fail):
            rel = os.path.relpath(folder, self.root).replace(os.sep, "/")
            for name in files:
                key = name if rel == "." else f"{rel}/{name}"
                if _TMP_MARK not in name and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Delete the file, then the folders that this emptied, up to the root: a prefix with no key
        left is gone on S3, and a finished job leaves no empty `_partial/` folders behind here either."""
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as e:
            raise local_error(path, e, "delete") from e
        folder = os.path.dirname(path)
        while folder.startswith(self.root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:  # not empty (another key, or a write under way), or gone already
                return
            folder = os.path.dirname(folder)

    def arrow_filesystem(self) -> tuple[pyarrow.fs.FileSystem, str]:
        import pyarrow.fs

        return pyarrow.fs.LocalFileSystem(), self.root

    def check_bucket(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise StorageError(
                f"{self.root} is a file, expected a folder (or a path that does not exist yet)"
            )


def _create(path: str, tmp: str) -> BinaryIO:
    """Make `path`'s folder and create the temporary file `tmp` in it. A concurrent `delete` may remove
    the new folder in between (it removes the folders it empties): then both steps run again."""
    for _ in range(_CREATE_TRIES - 1):
        with contextlib.suppress(FileNotFoundError):
            return _create_once(path, tmp)
    return _create_once(path, tmp)


def _create_once(path: str, tmp: str) -> BinaryIO:
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except FileNotFoundError:  # a parent removed while makedirs went down the path: try again
        raise
    except (FileExistsError, NotADirectoryError):
        raise StorageError(f"cannot write {path}: a parent of it is a file") from None
    except OSError as e:
        raise local_error(folder, e, "create the folder") from e
    return open(tmp, "xb")


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
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
    # A filesystem without hard links: fall back to O_EXCL (exclusive, but not atomic content).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f, open(tmp, "rb") as src:
            f.write(src.read())
            os.fsync(f.fileno())
    except OSError:
        os.unlink(path)  # ours (created exclusively): never leave a truncated marker behind
        raise
    return True
