"""A job's shard plan: which rows of which input file each shard holds.

`ShardSpec` is one shard; `ShardPlan` is all of them, stored as one `InputFile` per input file (O(files)
memory). Pure data: reading the files is `sjd_batch.io.prompts`' job.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """Rows `[row_start, row_end)` of the Parquet file at URI `source`; `index` is the shard number."""

    index: int
    source: str
    row_start: int
    row_end: int

    @property
    def num_rows(self) -> int:
        return self.row_end - self.row_start


@dataclass(frozen=True, slots=True)
class InputFile:
    """One input file of a plan, as its footer describes it: `footer` is 16 hex digits of a digest
    of the Parquet footer (schema, row groups, statistics), so with `size` it identifies the content."""

    uri: str
    rows: int
    has_id: bool
    size: int
    footer: str


@dataclass(frozen=True)
class ShardPlan:
    """Every shard of a job as row ranges of its files, in O(files) memory: shard specs are computed
    on demand (`plan[i]`, `iter(plan)`), never stored. Shard numbers run through the files in order;
    file k's shards are `shards_of(k)`."""

    files: tuple[InputFile, ...]
    shard_size: int
    _first: tuple[int, ...] = field(init=False, repr=False, compare=False)  # first shard of each file
    _row0: tuple[int, ...] = field(init=False, repr=False, compare=False)  # first global row of each file

    def __post_init__(self) -> None:
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        first, row0, shards, rows = [], [], 0, 0
        for f in self.files:
            first.append(shards)
            row0.append(rows)
            shards += -(-f.rows // self.shard_size)
            rows += f.rows
        object.__setattr__(self, "_first", (*first, shards))
        object.__setattr__(self, "_row0", (*row0, rows))

    def __len__(self) -> int:
        return self._first[-1]

    @property
    def rows(self) -> int:
        return self._row0[-1]

    def __getitem__(self, index: int) -> ShardSpec:
        if not 0 <= index < len(self):
            raise IndexError(f"shard {index} is not in this plan of {len(self)} shards")
        k = bisect.bisect_right(self._first, index) - 1
        start = (index - self._first[k]) * self.shard_size
        f = self.files[k]
        return ShardSpec(index, f.uri, start, min(start + self.shard_size, f.rows))

    def __iter__(self) -> Iterator[ShardSpec]:
        return (self[i] for i in range(len(self)))

    def shards_of(self, file_index: int) -> range:
        return range(self._first[file_index], self._first[file_index + 1])

    def rows_of(self, shards: Iterable[int]) -> int:
        """Input rows of the given shards, each counted once (numbers outside the plan count nothing)."""
        import numpy as np

        index = np.unique(np.fromiter(shards, dtype=np.int64))
        index = index[(index >= 0) & (index < len(self))]
        first = np.asarray(self._first[:-1], dtype=np.int64)
        k = np.searchsorted(first, index, side="right") - 1
        start = (index - first[k]) * self.shard_size
        rows = np.asarray([f.rows for f in self.files], dtype=np.int64)[k]
        return int(np.sum(np.minimum(start + self.shard_size, rows) - start))

    def to_record(self, redact: Callable[[str], str] = lambda uri: uri) -> dict[str, Any]:
        """The plan as `job.json` records it: O(files), with each URI passed through `redact`."""
        return {"shard_size": self.shard_size, "shards": len(self), "rows": self.rows,
                "files": [{"uri": redact(f.uri), "rows": f.rows, "has_id": f.has_id, "size": f.size,
                           "footer": f.footer} for f in self.files]}

    @staticmethod
    def from_record(record: dict[str, Any]) -> ShardPlan:
        files = tuple(InputFile(f["uri"], f["rows"], f["has_id"], f["size"], f["footer"])
                      for f in record["files"])
        return ShardPlan(files, record["shard_size"])

    def first_rows(self) -> tuple[int, ...]:
        """Global row number of each file's row 0, plus the total: global row = first_rows()[k] + row."""
        return self._row0


def planned_shard_count(job: dict[str, Any]) -> int:
    """How many shards the plan in a `job.json` has (the per-file record, or an older per-shard list)."""
    return int(job["plan"]["shards"]) if "plan" in job else len(job.get("shards", []))
