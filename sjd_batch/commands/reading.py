"""What the commands that read a job's output (`stats`, `status`, `compact`) share: open the output,
run one query on it, and word a failure as one line that names the command (exit status 2)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TypeVar

from sjd_batch.io.backends import open_storage
from sjd_batch.io.storage import Storage, StorageError

T = TypeVar("T")


def query_output(command: str, uri: str, query: Callable[[Storage], T]) -> T | None:
    """`query(storage)` on the output at `uri`; None once `sjd-batch COMMAND: error: ...` is printed for
    an output that cannot be opened or read (a bad URI, no job there, a store that refuses)."""
    try:
        return query(open_storage(uri))
    except (StorageError, ValueError) as e:
        print(f"sjd-batch {command}: error: {e}", file=sys.stderr)
        return None


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))
