"""The canonical form of a billed window's accesses, and its SHA-256 (`evidence_sha256`).

Anyone holding the access log can recompute the digest (docs/scraping.md):

1. Take the window's contributing accesses (after de-duplication by request_id).
2. Sort them by ts, then request_id (byte order of the UTF-8 text).
3. Write one line per access: `ts TAB request_id TAB credential TAB posts LF`, where ts is
   RFC 3339 UTC with exactly six fractional digits and `Z` (`2025-03-05T02:00:00.000000Z`),
   posts is a base-10 integer, and in request_id and credential a backslash, tab, line feed
   and carriage return are written `\\\\`, `\\t`, `\\n`, `\\r`.
4. SHA-256 over the UTF-8 bytes of all lines concatenated, in lower-case hex.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "canonical_lines",
    "canonical_lines_columns",
    "canonical_order",
    "digests_of_ranges",
    "evidence_sha256",
    "format_instants",
]

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
_SPECIAL = r"[\\\t\n\r]"
_DAY_US = 86_400_000_000
_FIRST_DAY = -354_285  # 1000-01-01: days before it print with fewer than four year digits
_LAST_DAY = 2_932_896  # 9999-12-31


def _escaped(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    for raw, written in _ESCAPES:
        values = pc.replace_substring(values, raw, written)
    return values


def canonical_order(events: pa.Table) -> pa.Table:
    """`events` sorted by ts, then request_id (the order lines are written in)."""
    return events.sort_by([("ts", "ascending"), ("request_id", "ascending")])


def canonical_lines(events: pa.Table) -> pa.Array:
    """The canonical line of every access of `events` (columns request_id, ts, credential,
    posts), in canonical order; built with Arrow kernels, no Python loop over rows."""
    ordered = canonical_order(events)
    ts = pc.strftime(ordered["ts"].cast(pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    line = pc.binary_join_element_wise(
        ts,
        _escaped(ordered["request_id"]),
        _escaped(ordered["credential"]),
        pc.cast(ordered["posts"], pa.string()),
        "\t",
    )
    joined = pc.binary_join_element_wise(line, pa.scalar("\n"), "")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def format_instants(ts_us: npt.NDArray[np.int64]) -> pa.Array:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes) for each instant, as large_binary.

    Vectorised digit arithmetic (Arrow's strftime is an order of magnitude slower): the
    date comes from a table of the few distinct days, the time of day from integer
    divisions. Instants outside years 1000-9999 fall back to `pc.strftime`.
    """
    ts = np.asarray(ts_us, dtype=np.int64)
    n = len(ts)
    if n == 0:
        return pa.array([], pa.large_binary())
    day = np.floor_divide(ts, _DAY_US)
    d0, d1 = int(day.min()), int(day.max())
    if d0 < _FIRST_DAY or d1 > _LAST_DAY or d1 - d0 > 1_000_000:
        text = pc.strftime(pa.array(ts, pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
        return text.cast(pa.large_binary())
    dates = np.datetime_as_string(np.arange(d0, d1 + 1).astype("datetime64[D]"))
    table = np.frombuffer("".join(dates.tolist()).encode("ascii"), dtype=np.uint8).reshape(-1, 10)
    out = np.empty((n, 27), dtype=np.uint8)
    out[:, :10] = table[day - d0]
    tod = ts - day * _DAY_US
    seconds, micros = np.divmod(tod, 1_000_000)
    minutes, sec = np.divmod(seconds, 60)
    hours, mins = np.divmod(minutes, 60)
    for col, value in ((11, hours), (14, mins), (17, sec)):
        out[:, col] = 48 + value // 10
        out[:, col + 1] = 48 + value % 10
    for k in range(6):
        out[:, 25 - k] = 48 + micros % 10
        micros //= 10
    out[:, 10] = ord("T")
    out[:, 13] = out[:, 16] = ord(":")
    out[:, 19] = ord(".")
    out[:, 26] = ord("Z")
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(27), n, [None, pa.py_buffer(out)])
    return fixed.cast(pa.large_binary())


def _escaped_binary(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.large_string())
    if pc.any(pc.match_substring_regex(values, _SPECIAL)).as_py():
        values = _escaped(values)
    return values.cast(pa.large_binary())


def canonical_lines_columns(
    ts_us: npt.NDArray[np.int64],
    request_id: pa.ChunkedArray | pa.Array,
    credential: pa.ChunkedArray | pa.Array,
    posts: npt.NDArray[np.int64],
) -> pa.Array:
    """The canonical lines of accesses given as columns, in the order given (the caller has
    put them in canonical order); same bytes as `canonical_lines`, large_binary."""
    line = pc.binary_join_element_wise(
        format_instants(ts_us),
        _escaped_binary(request_id),
        _escaped_binary(credential),
        pa.array(np.asarray(posts, dtype=np.int64)).cast(pa.large_string()).cast(pa.large_binary()),
        pa.scalar(b"\t", pa.large_binary()),
    )
    joined = pc.binary_join_element_wise(
        line, pa.scalar(b"\n", pa.large_binary()), pa.scalar(b"", pa.large_binary())
    )
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def evidence_sha256(events: pa.Table) -> str:
    """SHA-256 (hex) of the canonical lines of `events`."""
    return digests_of_ranges(canonical_lines(events), [(0, events.num_rows)])[0]


def digests_of_ranges(lines: pa.Array, ranges: list[tuple[int, int]]) -> list[str]:
    """SHA-256 (hex) of lines `lo <= i < hi` for each range, from one canonical array
    (windows are runs of one entity's accesses in canonical order, so one array of lines
    per entity serves all of its windows)."""
    if pa.types.is_string(lines.type):
        lines = lines.cast(pa.large_string())
    elif pa.types.is_binary(lines.type):
        lines = lines.cast(pa.large_binary())
    out: list[str] = []
    if len(lines) == 0:
        return [hashlib.sha256().hexdigest() for _ in ranges]
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    data = memoryview(lines.buffers()[2])
    for lo, hi in ranges:
        digest = hashlib.sha256()
        if hi > lo:
            start = int(offsets[lines.offset + lo])
            end = int(offsets[lines.offset + hi])
            digest.update(data[start:end])
        out.append(digest.hexdigest())
    return out
