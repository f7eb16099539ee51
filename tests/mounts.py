"""Small real filesystems for fault tests: a tmpfs of a few hundred KB (a disk that fills up), remounted
read-only on demand, and a process that runs as root without the right to override file permissions.

Mounting needs root with CAP_SYS_ADMIN: where that is missing (many CI containers), the test is skipped
and says why, instead of pretending.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "512k") -> Iterator[Path]:
    """Mount a tmpfs of `size` at `path` for the block; unmounts exactly that mount afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test runs as a user")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount_read_only(path: Path) -> None:
    """Make a tmpfs from `tmpfs()` read-only (writes then fail with EROFS)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)


def without_permission_override(argv: list[str]) -> list[str]:
    """`argv` run without CAP_DAC_OVERRIDE, so that file modes apply even to root (EACCES)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is missing: cannot drop root's permission override")
    if os.geteuid() != 0:
        return argv  # a plain user is subject to file modes anyway
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *argv]
