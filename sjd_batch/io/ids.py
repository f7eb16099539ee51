"""Sample ids: the rules an id must meet for an output format, checked per row and per column.

A sample id names the image object and the stats row, so it must be usable as an object name in
every output format. `IdRules.for_format` gives the rules; `id_problem` checks one id (what
`prompts.read_shard` uses, so a bad id becomes a skipped row with its reason); `column_ids` checks a
whole column at once (what the plan-time duplicate scan uses, `sjd_batch.io.id_scan`).

Limits are in UTF-8 bytes, not characters: a local file name is at most 255 bytes, and a local write
first creates `.<name>.sjdtmp-<32 hex digits>` next to it, so an image name `<id>.png` needs
`len(id) + 45 <= 255` bytes; 200 leaves room. WebDataset groups a tar's members by the name up to
the first `.`, so with `webdataset` output an id must not contain a dot.

`column_ids` is conservative by construction: it marks an id unusable only when `id_problem` surely
says so too (a null, an over-long, empty or `.`/`..` id, a forbidden byte, bytes that are all spaces, or
invalid UTF-8), never the other way round. An id it lets through that the per-row check refuses only
makes the duplicate scan stricter; an id it wrongly dropped could hide a duplicate, and cannot happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

MAX_ID_BYTES = 200
_ALWAYS_FORBIDDEN = "/\\"  # path separators: an id must not name a folder


@dataclass(frozen=True)
class IdRules:
    """What a sample id must satisfy: at most `max_bytes` of UTF-8, none of `forbidden`, no control
    characters, not empty, blank, `.` or `..`."""

    max_bytes: int = MAX_ID_BYTES
    forbidden: str = _ALWAYS_FORBIDDEN
    format: str = "png"  # named in error messages

    @staticmethod
    def for_format(image_format: str) -> IdRules:
        """The rules of an output format (`png`, `webdataset`, ...); unknown formats get png's."""
        if image_format == "webdataset":
            return IdRules(forbidden=_ALWAYS_FORBIDDEN + ".", format=image_format)
        return IdRules(format=image_format)

    def describe(self) -> str:
        chars = " ".join(repr(c) for c in self.forbidden)
        return (f"at most {self.max_bytes} bytes of UTF-8, no control characters or {chars} "
                f"(output format {self.format}), not empty, blank, '.' or '..'")


def id_text(raw: Any) -> tuple[str | None, str | None]:
    """A raw `id` cell -> (its text, None), or (None, why it has none). Bytes must be valid UTF-8."""
    if raw is None:
        return None, "id is null"
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8"), None
        except UnicodeDecodeError as e:
            return None, f"id is not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
    return str(raw), None


def id_problem(sid: str, rules: IdRules) -> str | None:
    """Why `sid` cannot be a sample id under `rules`, or None when it can."""
    size = len(sid.encode("utf-8", "surrogatepass"))
    bad = (not sid.strip() or sid in (".", "..") or size > rules.max_bytes
           or any(ch in rules.forbidden or ord(ch) < 32 for ch in sid))
    if not bad:
        return None
    return f"id {sid[:80]!r} ({size} bytes) is not usable as an object name: expected {rules.describe()}"


def generated_id(stem: str, row: int) -> str:
    """The id of a row of a file without an `id` column: `<file stem>-<row, 8 digits or more>`."""
    return f"{stem}-{row:08d}"


def column_ids(column: pa.Array | pa.ChunkedArray, rules: IdRules) -> tuple[pa.Array, np.ndarray]:
    """An `id` column -> (its ids as UTF-8 `large_binary`, bool mask of the ids that may be usable).

    Strings, binary and integers are converted in Arrow; any other type goes through `id_text` per
    value (exactly the per-row rule). See the module doc for why the mask errs towards True.
    """
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    t = column.type
    if pa.types.is_integer(t):
        column = column.cast(pa.string())
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
              or pa.types.is_large_binary(t)):
        return _ids_per_value(column, rules)
    data = column.cast(pa.large_binary())
    if not _valid_utf8(data):
        return _ids_per_value(column, rules)
    return data, _usable_mask(data, rules)


def _valid_utf8(data: pa.Array) -> bool:
    import pyarrow as pa

    try:
        data.cast(pa.large_string()).validate(full=True)
    except (pa.ArrowInvalid, ValueError):
        return False
    return True


def _ids_per_value(column: pa.Array, rules: IdRules) -> tuple[pa.Array, np.ndarray]:
    import numpy as np
    import pyarrow as pa

    texts = [id_text(v)[0] for v in column.to_pylist()]
    mask = np.array([t is not None and id_problem(t, rules) is None for t in texts], dtype=bool)
    data = pa.array([t.encode("utf-8", "surrogatepass") if t is not None else None for t in texts],
                    pa.large_binary())
    return data, mask


def _usable_mask(data: pa.Array, rules: IdRules) -> np.ndarray:
    """Per id (valid UTF-8): False where `id_problem` surely refuses it (see the module doc)."""
    import numpy as np
    import pyarrow.compute as pc

    lengths = pc.binary_length(data).fill_null(0).to_numpy()
    ok = np.asarray(data.is_valid(), dtype=bool) & (lengths > 0) & (lengths <= rules.max_bytes)
    banned = "".join(f"\\x{ord(c):02x}" for c in rules.forbidden)
    # a control character or a forbidden one anywhere; only spaces; "." or ".."
    refused = pc.match_substring_regex(data, f"[\\x00-\\x1f{banned}]|^ +$|^\\.\\.?$")
    return ok & ~np.asarray(refused.fill_null(True), dtype=bool)


def _buffers(data: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets rebased to 0, the bytes they index) of a `large_binary` array (a slice is fine)."""
    import numpy as np

    offsets = np.frombuffer(data.buffers()[1], dtype=np.int64)[data.offset : data.offset + len(data) + 1]
    buf = data.buffers()[2]
    raw = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
    raw = raw[offsets[0] : offsets[-1]] if len(offsets) else raw[:0]
    return offsets - (offsets[0] if len(offsets) else 0), raw


class Hasher:
    """64-bit digests of byte strings, vectorised: a polynomial hash with a random odd base, then a
    splitmix64 finaliser. Equal strings always give equal digests; different ones collide with
    probability about 2^-64 for inputs chosen without knowing the base (drawn per scan).

    The polynomial of each string comes from one running sum over all bytes: with C_k = sum over
    j < k of b_j * B^j, string [s, e) hashes to (C_e - C_s) * B^-s (B is odd, so B^-1 mod 2^64
    exists). No per-string loop and no per-byte position array.
    """

    def __init__(self, seed: int) -> None:
        import numpy as np

        self.base = np.uint64((seed | 1) & (2**64 - 1))
        self.inverse = np.uint64(pow(int(self.base), -1, 2**64))
        self._pow = np.ones(1, np.uint64)
        self._inv = np.ones(1, np.uint64)

    def _powers(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        import numpy as np

        if len(self._pow) < n:
            m = max(n, 2 * len(self._pow))
            with np.errstate(over="ignore"):
                one = np.ones(1, np.uint64)
                self._pow = np.concatenate([one, np.cumprod(np.full(m - 1, self.base))])
                self._inv = np.concatenate([one, np.cumprod(np.full(m - 1, self.inverse))])
        return self._pow, self._inv

    def digests(self, data: pa.Array, chunk_bytes: int = 1 << 20) -> np.ndarray:
        """uint64 [len(data)] digests of a `large_binary` array (nulls hash like empty strings).

        Works through `chunk_bytes` of string data at a time, so the power tables stay small.
        """
        import numpy as np

        offsets, raw = _buffers(data)
        out = np.empty(len(data), np.uint64)
        start = 0
        while start < len(data):
            stop = int(np.searchsorted(offsets, offsets[start] + chunk_bytes, side="right")) - 1
            stop = min(len(data), max(stop, start + 1))
            part = offsets[start : stop + 1]
            out[start:stop] = self._digest(part - part[0], raw[part[0] : part[-1]])
            start = stop
        return out

    def _digest(self, offsets: np.ndarray, raw: np.ndarray) -> np.ndarray:
        import numpy as np

        pw, inv = self._powers(len(raw) + 1)
        running = np.zeros(len(raw) + 1, np.uint64)
        with np.errstate(over="ignore"):
            np.cumsum(raw * pw[: len(raw)], out=running[1:])
            h = (running[offsets[1:]] - running[offsets[:-1]]) * inv[offsets[:-1]]
            h ^= np.diff(offsets).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            h ^= h >> np.uint64(30)
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(27)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(31)
        return h
