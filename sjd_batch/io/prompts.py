"""Parquet prompt inputs: files -> a shard plan -> validated rows.

Input schema: a `prompt` column (string or binary), and optional `id` (any type, used as `str`),
`seed` (integer) and `negative_prompt` (string or binary) columns. Other columns are ignored.

Sample ids are stable: the `id` column when present, else `f"{file_stem}-{row:08d}"`, the file's name
without `.parquet` and the row's index inside that file (so `prompts/part-0.parquet` row 7 is
`part-0-00000007`). Without an `id` column, two input files must not share a stem; `plan_inputs`
refuses that, since their samples would collide. The id rules (bytes, characters) depend on the output
format: see `sjd_batch.io.ids`. Ids repeated across shards, explicit or generated, are found before
any work by `sjd_batch.io.id_scan`.

Shards never cross files: `plan_inputs` cuts each file (in the sorted order `expand_inputs` returns)
into runs of `shard_size` rows, so a plan depends only on the input files, their row counts and the
shard size. Only Parquet footers are read to plan, and the `ShardPlan` (`sjd_batch.io.shards`) holds
one entry per file, not per shard: planning 100M rows costs what planning 100 files does.

A row that cannot become a sample (null, empty, whitespace-only or non-UTF-8 prompt; a null, unusable or
duplicate id) is returned as a `BadRow` with the reason, so the job can skip and record it. A file that
cannot be read at all (corrupt, or no `prompt` column) raises `InputError` naming the file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sjd_batch.io.backends import open_storage
from sjd_batch.io.ids import IdRules, generated_id, id_problem, id_text
from sjd_batch.io.shards import InputFile, ShardPlan, ShardSpec
from sjd_batch.io.storage import StorageError, arrow_error, split_uri

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

_TEXT_TYPES = ("string", "large_string", "string_view", "binary", "large_binary", "binary_view")


class InputError(StorageError):
    """An input file that cannot be used at all: names the file and what was expected."""


@dataclass(frozen=True)
class PromptRow:
    """One valid input sample. `source` is the file's URI and `row` the row index inside it."""

    sample_id: str
    prompt: str
    seed: int | None
    negative_prompt: str | None
    source: str
    row: int


@dataclass(frozen=True)
class BadRow:
    """A row that was skipped, and why (e.g. "prompt is null")."""

    sample_id: str
    source: str
    row: int
    reason: str


def expand_inputs(uris: list[str]) -> list[str]:
    """Files or prefixes (local or `s3://`) -> the sorted, de-duplicated URIs of their Parquet files.

    A prefix contributes every `*.parquet` object below it, except those under a `_` or `.` folder or
    named so (`_SUCCESS`, `_commits/`, hidden files). Raises `StorageError` for a missing bucket or bad
    credentials, and `InputError` when an input names nothing.
    """
    if not uris:
        raise InputError("no input given: expected one or more Parquet files or prefixes")
    found: set[str] = set()
    for uri in uris:
        found.update(_expand_one(uri))
    return sorted(found)


def _expand_one(uri: str) -> list[str]:
    parent, name = split_uri(uri)
    folder = open_storage(parent)
    if name and folder.exists(name):
        return [folder.join(name)]  # normalised: absolute local paths, no trailing slash
    storage = open_storage(uri)
    files = [storage.join(k) for k in storage.list() if _is_data_file(k)]
    if files:
        return files
    storage.check_bucket()  # a clearer error for a missing bucket or wrong credentials
    raise InputError(f"no Parquet files found at {uri}: expected a .parquet file or a prefix holding some")


def _is_data_file(key: str) -> bool:
    parts = key.split("/")
    return key.endswith(".parquet") and not any(p.startswith(("_", ".")) for p in parts)


def plan_inputs(files: list[str], shard_size: int, rules: IdRules | None = None) -> ShardPlan:
    """Cut files into shards of at most `shard_size` rows, in the given order, from their footers only.

    Raises `InputError` when two files without an `id` column share a stem, or when the ids generated
    for a file's rows would break `rules` (e.g. a dot in the stem with WebDataset output).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    rules = rules or IdRules()
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(files)))) as pool:
        inputs = list(pool.map(_describe, files))  # S3 latency, not CPU, dominates
    stems: dict[str, str] = {}
    for f in inputs:
        if not f.has_id:
            _claim_stem(stems, f.uri)
            _check_generated(f, rules)
    return ShardPlan(tuple(inputs), shard_size)


def _describe(uri: str) -> InputFile:
    import pyarrow as pa

    pf, size = _open_sized(uri)
    meta = pf.metadata
    sink = pa.BufferOutputStream()
    meta.write_metadata_file(sink)  # the footer, re-serialised: a stable identity of the content
    footer = hashlib.blake2b(sink.getvalue().to_pybytes(), digest_size=8).hexdigest()
    return InputFile(uri, meta.num_rows, "id" in meta.schema.names, size, footer)


def _check_generated(f: InputFile, rules: IdRules) -> None:
    """Generated ids differ only in their row digits: checking the last row's checks them all."""
    if f.rows == 0:
        return
    problem = id_problem(generated_id(file_stem(f.uri), f.rows - 1), rules)
    if problem:
        raise InputError(f"{f.uri} has no `id` column, and the ids generated from its name would not work: "
                         f"{problem}; add an `id` column or rename the file")


def _claim_stem(stems: dict[str, str], uri: str) -> None:
    stem = file_stem(uri)
    if stem in stems:
        raise InputError(
            f"{uri} and {stems[stem]} both have the stem {stem!r} and no `id` column: their sample ids "
            f"({stem}-00000000, ...) would collide; add an `id` column or rename one file"
        )
    stems[stem] = uri


def file_stem(uri: str) -> str:
    """The file name without `.parquet`: the prefix of generated sample ids."""
    name = split_uri(uri)[1]
    return name[: -len(".parquet")] if name.endswith(".parquet") else os.path.splitext(name)[0]


def _open(uri: str) -> pq.ParquetFile:
    """Open a Parquet file through the Storage's arrow filesystem; corrupt files raise InputError."""
    return _open_sized(uri)[0]


def _open_sized(uri: str) -> tuple[pq.ParquetFile, int]:
    """`_open`, plus the file's size in bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parent, name = split_uri(uri)
    storage = open_storage(parent)
    fs, root = storage.arrow_filesystem()
    try:
        source = fs.open_input_file(f"{root}/{name}")
        return pq.ParquetFile(source), source.size()
    except FileNotFoundError:
        storage.check_bucket()  # "bucket ... does not exist" is the clearer error when it applies
        raise InputError(f"{uri} does not exist: expected a Parquet file") from None
    except pa.ArrowInvalid as e:  # bad magic bytes, a truncated footer, ...
        raise InputError(f"{uri} is not a readable Parquet file: {e}") from e
    except OSError as e:  # the store itself failed (after pyarrow's retries)
        raise arrow_error(uri, e) from e


def read_shard(spec: ShardSpec, rules: IdRules | None = None) -> list[PromptRow | BadRow]:
    """Read and validate the rows of one shard, in row order (see module doc for the rules).

    `rules` are the output format's id rules (`IdRules.for_format`); png's by default.
    """
    rules = rules or IdRules()
    pf = _open(spec.source)
    columns = _check_schema(spec.source, pf.schema_arrow)
    table = _read_rows(pf, columns, spec.row_start, spec.row_end, spec.source)
    data = {c: table.column(c).to_pylist() for c in columns}
    stem, seen = file_stem(spec.source), {}
    out: list[PromptRow | BadRow] = []
    for i in range(table.num_rows):
        values = {c: data[c][i] for c in columns}
        out.append(_make_row(values, spec.source, spec.row_start + i, stem, seen, rules))
    return out


def _check_schema(uri: str, schema: pa.Schema) -> list[str]:
    """The columns to read; raises InputError for a missing `prompt` or a wrongly typed column."""
    import pyarrow as pa

    names = schema.names
    if "prompt" not in names:
        raise InputError(f"{uri} has no `prompt` column: expected a string column `prompt`, found {names}")
    expected = {"prompt": "string or binary", "negative_prompt": "string or binary", "seed": "integer"}
    for col, want in expected.items():
        if col not in names:
            continue
        t = schema.field(col).type
        if pa.types.is_dictionary(t):  # pandas and Polars write categoricals this way: judge the values
            t = t.value_type
        ok = pa.types.is_null(t) or (pa.types.is_integer(t) if col == "seed" else str(t) in _TEXT_TYPES)
        if not ok:
            raise InputError(f"{uri}: column `{col}` has type {t}, expected {want}")
    return [c for c in ("id", "prompt", "seed", "negative_prompt") if c in names]


def _read_rows(pf: pq.ParquetFile, columns: list[str], start: int, end: int, uri: str) -> pa.Table:
    """Rows [start, end) as a table whose text columns are binary, reading only overlapping row groups."""
    import pyarrow as pa

    groups, first, offset = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(g).num_rows
        if offset < end and offset + n > start:
            groups.append(g)
            first = offset if first is None else first
        offset += n
    if end > offset:
        raise InputError(f"{uri} has {offset} rows, but the shard asks for rows {start}..{end - 1}")
    try:
        table = pf.read_row_groups(groups, columns=columns) if groups else pf.schema_arrow.empty_table()
    except pa.ArrowInvalid as e:
        raise InputError(f"{uri}: cannot read rows {start}..{end - 1}: {e}") from e
    except OSError as e:
        raise arrow_error(uri, e) from e
    table = table.select(columns).slice(start - (first or 0), end - start)
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):  # a categorical column: its values, row by row
            decoded = [chunk.dictionary_decode() for chunk in table.column(i).chunks]
            table = table.set_column(i, field.name, pa.chunked_array(decoded, field.type.value_type))
    for col in ("prompt", "negative_prompt", "id"):
        if col in columns and (col != "id" or str(table.schema.field(col).type) in _TEXT_TYPES):
            # bytes, so that invalid UTF-8 in a "string" column is caught per row
            i = table.schema.get_field_index(col)
            table = table.set_column(i, col, table.column(col).cast(pa.large_binary()))
    return table


def _make_row(values: dict, source: str, row: int, stem: str, seen: dict[str, int],
              rules: IdRules) -> PromptRow | BadRow:
    """Validate one row; `seen` maps the ids of this shard to their row, to catch duplicates."""
    sample_id, reason = _sample_id(values, row, stem, rules)
    if reason is None and sample_id in seen:
        reason = f"duplicate id {sample_id!r} (first at row {seen[sample_id]})"
    if reason is None:
        seen[sample_id] = row
        prompt, reason = _text(values["prompt"], "prompt")
    if reason is None:
        negative, reason = _text(values.get("negative_prompt"), "negative_prompt", required=False)
    if reason is not None:
        return BadRow(sample_id=sample_id, source=source, row=row, reason=reason)
    return PromptRow(sample_id, prompt, values.get("seed"), negative or None, source, row)


def _sample_id(values: dict, row: int, stem: str, rules: IdRules) -> tuple[str, str | None]:
    """The row's sample id, and why it is unusable (None when it is fine). An unusable row keeps
    its generated id, which names it in the errors file."""
    generated = generated_id(stem, row)
    if "id" not in values:
        return generated, None
    sid, reason = id_text(values["id"])
    if reason is None:
        reason = id_problem(sid, rules)
    return (generated, reason) if reason else (sid, None)


def _text(raw: bytes | None, column: str, required: bool = True) -> tuple[str | None, str | None]:
    """Decode one text cell: (text, None), or (None, reason) when it is unusable."""
    if raw is None:
        return None, (f"{column} is null" if required else None)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"{column} is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
    if required and not text:
        return None, f"{column} is empty"
    if required and not text.strip():
        return None, f"{column} is blank (whitespace only)"
    return text, None


def write_local_prompts(path: Path, rows: int, make: Callable[[], pa.Table]) -> bool:
    """The local prompt file `path` with `rows` rows: kept if one of that size is there, else `make()`
    written (zstd, 128K-row groups) to a temporary file renamed over `path`, so a reader never sees half
    of it. True if it wrote. For generated benchmark inputs (bench-plan's, gigabytes), which a
    bytes-in-memory `Storage.write_bytes` would hold whole."""
    import pyarrow.parquet as pq

    if path.exists() and pq.read_metadata(path).num_rows == rows:
        return False
    tmp = path.with_suffix(".tmp")
    pq.write_table(make(), tmp, row_group_size=128 * 1024, compression="zstd")
    os.replace(tmp, path)
    return True
