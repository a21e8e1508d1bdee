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

from consentry.binary import binary_parts, fixed_rows

__all__ = [
    "canonical_lines",
    "canonical_lines_columns",
    "canonical_order",
    "digests_of_ranges",
    "escaped_binary",
    "evidence_sha256",
    "format_instants",
    "needs_escape",
    "tabbed",
]

_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))
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


def _void(rows: npt.NDArray[np.uint8]) -> npt.NDArray[np.void]:
    """The rows of a 2-D uint8 array as one `V<width>` item each (zero copy)."""
    data = np.ascontiguousarray(rows)
    return data.view(f"V{data.shape[1]}").ravel()


def _clock_tables() -> tuple[npt.NDArray[np.void], npt.NDArray[np.void]]:
    """`HH:MM:SS.` for every second of a day; `ffffffZ` + TAB for every microsecond."""
    global _CLOCK, _MICROS
    if _CLOCK is None or _MICROS is None:
        sec = np.arange(86_400)
        clock = np.empty((86_400, 9), dtype=np.uint8)
        for col, value in ((0, sec // 3600), (3, sec // 60 % 60), (6, sec % 60)):
            clock[:, col] = 48 + value // 10
            clock[:, col + 1] = 48 + value % 10
        clock[:, 2] = clock[:, 5] = ord(":")
        clock[:, 8] = ord(".")
        micro = np.arange(1_000_000)
        micros = np.empty((1_000_000, 8), dtype=np.uint8)
        for k in range(6):
            micros[:, 5 - k] = 48 + micro // 10**k % 10
        micros[:, 6] = ord("Z")
        micros[:, 7] = ord("\t")
        _CLOCK, _MICROS = _void(clock), _void(micros)
    return _CLOCK, _MICROS


_CLOCK: npt.NDArray[np.void] | None = None
_MICROS: npt.NDArray[np.void] | None = None


def _instant_pieces(ts_us: npt.NDArray[np.int64]) -> list[pa.Array] | None:
    """Three binary columns that concatenate to `YYYY-MM-DDTHH:MM:SS.ffffffZ` + TAB per
    instant (table lookups: the few distinct days, the 86,400 seconds of a day, the
    1,000,000 microseconds; NumPy takes of fixed-width items, no per-value memcpy);
    None outside years 1000-9999 or over long spans."""
    ts = np.asarray(ts_us, dtype=np.int64)
    if len(ts) == 0:
        return None
    day, tod = np.divmod(ts, _DAY_US)
    d0, d1 = int(day.min()), int(day.max())
    if d0 < _FIRST_DAY or d1 > _LAST_DAY or d1 - d0 > 100_000:
        return None
    dates = np.datetime_as_string(np.arange(d0, d1 + 1).astype("datetime64[D]"))
    table = np.frombuffer(
        "".join(f"{d}T" for d in dates.tolist()).encode("ascii"), dtype=np.uint8
    ).reshape(-1, 11)
    clock, micros = _clock_tables()
    day -= d0
    seconds, micro = np.divmod(tod, 1_000_000)
    return [
        fixed_rows(_void(table)[day]),
        fixed_rows(clock[seconds]),
        fixed_rows(micros[micro]),
    ]


def format_instants(ts_us: npt.NDArray[np.int64]) -> pa.Array:
    """`YYYY-MM-DDTHH:MM:SS.ffffffZ` for each instant (binary), as `pc.strftime` writes it
    with `%Y-%m-%dT%H:%M:%SZ` but by table lookups (module doc)."""
    pieces = _instant_pieces(ts_us)
    if pieces is None:
        text = pc.strftime(
            pa.array(np.asarray(ts_us, dtype=np.int64), pa.timestamp("us", tz="UTC")),
            "%Y-%m-%dT%H:%M:%SZ",
        )
        return text.cast(pa.binary())
    joined = pc.binary_join_element_wise(*pieces, b"")
    return pc.binary_slice(joined, 0, 27) if len(joined) else joined


def escaped_binary(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """`values` (strings) with the canonical escapes applied, as binary. The bytes are
    scanned once for a backslash, tab, LF or CR; only then are the replacements run."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type):
        values = values.cast(pa.large_string())
        wide = True
    else:
        values = values.cast(pa.string())
        wide = False
    if needs_escape(values):
        values = _escaped(values)
    return values.cast(pa.large_binary() if wide else pa.binary())


_SCAN_BYTES = 1 << 26


def needs_escape(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether any value holds a byte the canonical form escapes (backslash, TAB, LF, CR).
    Scanned in slices of 64 MiB: two SIMD comparisons per byte, and the exact test only
    on a slice with a control byte."""
    if len(values) == 0:
        return False
    raw = np.frombuffer(binary_parts(values)[1], dtype=np.uint8)
    for at in range(0, len(raw), _SCAN_BYTES):
        part = raw[at : at + _SCAN_BYTES]
        if bool((part == 92).any()):
            return True
        if bool((part < 14).any()) and any(bool((part == b).any()) for b in (9, 10, 13)):
            return True
    return False


def tabbed(values: pa.Array) -> pa.Array:
    """TAB + value + TAB for each value (escaped binary): the middle of a canonical line,
    built once per distinct credential instead of once per line."""
    tab = pa.scalar(b"\t", values.type)
    joined = pc.binary_join_element_wise(tab, values, tab, pa.scalar(b"", values.type))
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


_SMALL_POSTS = 100_000
"""Posts counts below this are written from a table of their texts (one take)."""


def _posts_text(posts: npt.NDArray[np.int64]) -> pa.Array:
    """Each count in base 10 followed by LF; counts below `_SMALL_POSTS` are taken from a
    table of the texts of 0..max."""
    counts = np.asarray(posts, dtype=np.int64)
    small = len(counts) > 0 and int(counts.min()) >= 0 and int(counts.max()) < _SMALL_POSTS
    values = np.arange(int(counts.max()) + 1) if small else counts
    texts = pa.array(values).cast(pa.string()).cast(pa.binary())
    lf, empty = pa.scalar(b"\n", pa.binary()), pa.scalar(b"", pa.binary())
    joined: pa.Array = pc.binary_join_element_wise(texts, lf, empty)
    return joined.take(pa.array(counts)) if small else joined


def canonical_lines_columns(
    ts_us: npt.NDArray[np.int64],
    request_id: pa.Array,
    tabbed_credential: pa.Array,
    posts: npt.NDArray[np.int64],
) -> pa.Array:
    """The canonical lines of accesses given as columns, in the order given (the caller has
    put them in canonical order); same bytes as `canonical_lines`. `request_id` must
    already be escaped binary (`escaped_binary`), and each credential escaped and between
    its TABs (`tabbed`: built once per distinct credential, not once per line).

    One join of six columns and no scalars (Arrow's join is several times slower with
    scalar pieces): the instant's three table lookups (the last ends with TAB),
    request_id, TAB + credential + TAB, posts + LF."""
    wide = pa.types.is_large_binary(request_id.type) or pa.types.is_large_binary(
        tabbed_credential.type
    )
    kind = pa.large_binary() if wide else pa.binary()
    if len(request_id) == 0:
        return pa.array([], kind)
    pieces = _instant_pieces(ts_us)
    if pieces is None:
        stamps = format_instants(ts_us)
        pieces = [stamps, pa.array([b"\t"] * len(stamps), pa.binary())]
    line = pc.binary_join_element_wise(
        *[p.cast(kind) for p in pieces],
        request_id.cast(kind),
        tabbed_credential.cast(kind),
        _posts_text(posts).cast(kind),
        pa.scalar(b"", kind),
    )
    return line.combine_chunks() if isinstance(line, pa.ChunkedArray) else line


def evidence_sha256(events: pa.Table) -> str:
    """SHA-256 (hex) of the canonical lines of `events`."""
    return digests_of_ranges(canonical_lines(events), [(0, events.num_rows)])[0]


def digests_of_ranges(lines: pa.Array, ranges: list[tuple[int, int]]) -> list[str]:
    """SHA-256 (hex) of lines `lo <= i < hi` for each range, from one canonical array
    (windows are runs of one entity's accesses in canonical order, so one array of lines
    per entity serves all of its windows)."""
    offsets, data = binary_parts(lines)
    return [
        hashlib.sha256(data[int(offsets[lo]) : int(offsets[hi])]).hexdigest() for lo, hi in ranges
    ]
