"""Turn raw columns into a canonical table, or say exactly which rows are wrong and why.

Every check is a vectorised Arrow compute kernel producing a boolean mask over the column;
Python only runs for the (at most 20) problems that get reported. Rules in docs/tables.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consentry.errors import Problem
from consentry.instants import (
    EARLIEST_DATE,
    EARLIEST_INSTANT,
    LATEST_DATE,
    LATEST_INSTANT,
    RANGE_TEXT,
    rfc3339,
)
from consentry.schema import TIMESTAMP_TYPE, ColumnSpec, TableSpec, arrow_schema
from consentry.sources.readers import MAX_PROBLEMS, RawTable

__all__ = ["MAX_PROBLEMS", "Conformed", "conform", "conform_arrow", "count_as_instant"]

# ISO 8601 date-time: date, `T` or space, HH:MM[:SS[.fraction]], then the offset.
_DATETIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]+)?)?"
_OFFSET = r"(Z|[+-]([01][0-9]|2[0-3])(:?[0-5][0-9])?)$"
_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
# |n| < 10**18 always fits int64; longer digit strings are out of range.
_INTEGER = r"^-?0*[0-9]{1,18}$"
_DIGITS = r"^-?[0-9]+$"
_BOOLEAN_TRUE = pa.array(["true", "1"])
_BOOLEAN_ANY = pa.array(["true", "false", "1", "0"])
_REGION = r"^[A-Z]{2}$"
# C0 controls, DEL and C1 controls (RE2 syntax): invisible, and NUL ends C strings.
_CONTROL = r"[\x00-\x1f\x7f-\x{9f}]"
_INT64_MAX = 2**63 - 1
_UTF8_BLOCK = 4096

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_DAY_MS = 86_400_000
_DATE_RANGE_TEXT = f"between {EARLIEST_DATE} and {LATEST_DATE} (exclusive)"
_EARLIEST_DAY = (EARLIEST_DATE - _EPOCH.date()).days
_LATEST_DAY = (LATEST_DATE - _EPOCH.date()).days
"""The accepted dates (consentry.instants) as days since 1970-01-01, [earliest, latest)."""

_JSON_WANT: dict[str, tuple[str, pa.Array]] = {
    "int": ("integer", pa.array(["BIGINT", "UBIGINT"])),
    "bool": ("boolean", pa.array(["BOOLEAN"])),
}
_JSON_STRING = ("string", pa.array(["VARCHAR"]))
_JSON_NAMES = {
    "VARCHAR": "string",
    "BIGINT": "integer",
    "UBIGINT": "integer",
    "DOUBLE": "number",
    "BOOLEAN": "boolean",
    "OBJECT": "object",
    "ARRAY": "array",
}

Message = Callable[[Any], str]
"""Builds a problem's message from the offending raw value."""


@dataclass(frozen=True, slots=True)
class _Check:
    mask: pa.ChunkedArray
    message: Message
    shown: pa.ChunkedArray | None = None
    """What the message is built from (default: the raw input value)."""


@dataclass(frozen=True, slots=True)
class Conformed:
    """The outcome of validating one input.

    `table` has the canonical schema and is only meaningful when `problems` is empty.
    `problem_count` counts every failing cell even though at most 20 are listed.
    """

    table: pa.Table
    problems: list[Problem]
    problem_count: int
    location: str = ""
    """The input's location (file or origin), as problems name it."""
    row_numbers: pa.Array | None = None
    """The row number of each row of `table` in the input; None means index + 1."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _first_control(text: str) -> str:
    """The first control character of `text` as `U+XXXX` (it matched `_CONTROL`)."""
    code = next(ord(c) for c in text if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)
    return f"U+{code:04X}"


def _flag(mask: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray:
    """A mask with nulls read as False, always chunked."""
    filled = pc.fill_null(mask, False)
    return filled if isinstance(filled, pa.ChunkedArray) else pa.chunked_array([filled])


def _matches(values: pa.ChunkedArray, pattern: str) -> pa.ChunkedArray:
    return _flag(pc.match_substring_regex(values, pattern))


def _nulls_where(values: pa.ChunkedArray, bad: pa.ChunkedArray) -> pa.ChunkedArray:
    result = pc.if_else(bad, pa.scalar(None, values.type), values)
    return result if isinstance(result, pa.ChunkedArray) else pa.chunked_array([result])


def _valid_dates(date_text: pa.ChunkedArray) -> pa.ChunkedArray:
    """True where YYYY-MM-DD names a real calendar day (Feb 30 parses but does not round-trip)."""
    parsed = pc.strptime(date_text, format="%Y-%m-%d", unit="s", error_is_null=True)
    return _flag(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), date_text))


def _outside(values: pa.ChunkedArray, low: Any, high: Any) -> pa.ChunkedArray:
    """True where a value lies outside [low, high) (nulls are inside)."""
    return _flag(pc.or_(pc.less(values, low), pc.greater_equal(values, high)))


def _instant_range_check(instants: pa.ChunkedArray) -> _Check:
    """Parsed instants (timestamp[us, UTC]) outside the accepted range; shown as written."""
    low = pa.scalar(EARLIEST_INSTANT, TIMESTAMP_TYPE)
    high = pa.scalar(LATEST_INSTANT, TIMESTAMP_TYPE)
    return _Check(
        _outside(instants, low, high),
        lambda v: f"instant out of range: {_show(v)}; must lie {RANGE_TEXT}",
    )


def _date_range_check(dates: pa.ChunkedArray) -> _Check:
    """Parsed dates (date32) outside the accepted range; shown as written."""
    low, high = pa.scalar(EARLIEST_DATE, pa.date32()), pa.scalar(LATEST_DATE, pa.date32())
    return _Check(
        _outside(dates, low, high),
        lambda v: f"date out of range: {_show(v)}; must lie {_DATE_RANGE_TEXT}",
    )


def count_as_instant(count: int, unit: str = "us") -> str:
    """A timestamp count since the epoch in `unit` as RFC 3339, or as the count itself when
    no datetime can hold it (for messages about values outside the accepted range)."""
    try:
        return rfc3339(_EPOCH + timedelta(microseconds=count * 10**6 // _PER_SECOND[unit]))
    except OverflowError:
        return f"{count} {unit} since 1970-01-01T00:00:00Z"


def _days_as_date(days: int) -> str:
    """A stored day count as YYYY-MM-DD, or as the count when no date can hold it."""
    try:
        return (_EPOCH.date() + timedelta(days=days)).isoformat()
    except OverflowError:
        return f"{days} days since 1970-01-01"


def _typed_instants(values: pa.ChunkedArray, unit: str) -> tuple[pa.ChunkedArray, list[_Check]]:
    """A zoned timestamp column of any unit as timestamp[us, UTC], range-checked first.

    1. The range is compared on the stored counts in the column's own unit: a count outside
       it may not fit in microseconds (a cast would wrap around) or in a Python datetime.
    2. Values outside the range become null; the rest are cast, dropping sub-microsecond
       digits (the zone is only metadata).
    """
    per_second = _PER_SECOND[unit]
    counts = pc.cast(values, pa.int64())
    low = int((EARLIEST_INSTANT - _EPOCH).total_seconds()) * per_second
    high = int((LATEST_INSTANT - _EPOCH).total_seconds()) * per_second
    out = _outside(counts, low, high)
    fitted = pc.cast(_nulls_where(values, out), TIMESTAMP_TYPE, safe=False)
    check = _Check(
        out,
        lambda v: f"instant out of range: {count_as_instant(v, unit)}; must lie {RANGE_TEXT}",
        shown=counts,
    )
    return fitted, [check]


def _typed_dates(values: pa.ChunkedArray) -> tuple[pa.ChunkedArray, list[_Check]]:
    """A date32 or date64 column as date32, range-checked on the stored counts first.

    1. date32 counts days, date64 milliseconds; either may hold a day no `date` can.
    2. Values outside the range become null; a date64 count that is not a whole day
       floors to its day (cast via a timestamp).
    """
    per_day = _DAY_MS if values.type == pa.date64() else 1
    stored = pa.int64() if per_day > 1 else pa.int32()
    counts = pc.cast(pc.cast(values, stored), pa.int64())
    out = _outside(counts, _EARLIEST_DAY * per_day, _LATEST_DAY * per_day)
    if per_day == 1:
        fitted = _nulls_where(values, out)
    else:
        fitted = pc.cast(pc.cast(_nulls_where(counts, out), pa.timestamp("ms")), pa.date32())
    check = _Check(
        out,
        lambda v: f"date out of range: {_days_as_date(v // per_day)}; must lie {_DATE_RANGE_TEXT}",
        shown=counts,
    )
    return fitted, [check]


def _invalid_utf8(text: pa.ChunkedArray) -> pa.ChunkedArray | None:
    """Where a string is not UTF-8, or None when all are (the usual case: one C++ pass).

    CSV and JSON Lines readers refuse a file that is not UTF-8, but Parquet and Arrow data
    are not checked when read. Only a failing chunk is searched, block by block, and only
    a failing block row by row.
    """
    if all(_is_utf8(chunk) for chunk in text.chunks):
        return None
    masks = []
    for chunk in text.chunks:
        mask = np.zeros(len(chunk), dtype=bool)
        for start in range(0, len(chunk), _UTF8_BLOCK):
            block = chunk.slice(start, _UTF8_BLOCK)
            if not _is_utf8(block):
                for i in range(len(block)):
                    mask[start + i] = not _is_utf8(block.slice(i, 1))
        masks.append(mask)
    return pa.chunked_array([pa.array(np.concatenate(masks), pa.bool_())])


def _is_utf8(strings: pa.Array) -> bool:
    try:
        strings.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _json_type_message(want: str) -> Message:
    def message(kind: Any) -> str:
        return f"expected a JSON {want}, got a JSON {_JSON_NAMES.get(str(kind), str(kind))}"

    return message


def _from_text(col: ColumnSpec, text: pa.ChunkedArray) -> tuple[pa.ChunkedArray, list[_Check]]:
    """Parse a text column into the column's type; returns values and per-row failures."""
    present = _flag(pc.is_valid(text))
    if col.kind in ("string", "enum"):
        return text, []
    if col.kind == "int":
        digits = _matches(text, _DIGITS)
        fits = _matches(text, _INTEGER)
        not_int = pc.and_(present, pc.invert(digits))
        too_big = pc.and_(digits, pc.invert(fits))
        values = pc.cast(_nulls_where(text, pc.invert(fits)), pa.int64())
        return values, [
            _Check(_flag(not_int), lambda v: f"not an integer: {_show(v)}"),
            _Check(_flag(too_big), lambda v: f"integer out of range: {v}"),
        ]
    if col.kind == "bool":
        lower = pc.utf8_lower(text)
        ok = _flag(pc.is_in(lower, value_set=_BOOLEAN_ANY))
        values = pc.is_in(_nulls_where(lower, pc.invert(ok)), value_set=_BOOLEAN_TRUE)
        values = _nulls_where(values, pc.invert(ok))
        return values, [
            _Check(
                pc.and_(present, pc.invert(ok)),
                lambda v: f"not a boolean (true/false/1/0): {_show(v)}",
            )
        ]
    if col.kind == "date":
        shaped = _matches(text, _DATE)
        values, ok = _cast_real_days(_nulls_where(text, pc.invert(shaped)), shaped, pa.date32())
        return values, [
            _Check(
                _flag(pc.and_(present, pc.invert(ok))),
                lambda v: f"bad date: {_show(v)} (want YYYY-MM-DD)",
            ),
            _date_range_check(values),
        ]
    # timestamp
    with_offset = _matches(text, _DATETIME + _OFFSET)
    candidates = _nulls_where(text, pc.invert(with_offset))
    try:
        values = pc.cast(candidates, TIMESTAMP_TYPE)
        ok = with_offset
    except pa.ArrowInvalid:
        # Arrow parses at most 6 fractional digits into microseconds; finer ones are dropped.
        trimmed = pc.replace_substring_regex(
            candidates, pattern=r"(\.[0-9]{6})[0-9]+", replacement=r"\1"
        )
        values, ok = _cast_real_days(trimmed, with_offset, TIMESTAMP_TYPE)
    bad_day = pc.and_(with_offset, pc.invert(ok))
    rest = pc.and_(present, pc.invert(with_offset))
    naive = pc.and_(rest, _matches(text, _DATETIME + "$"))
    unparsable = pc.and_(rest, pc.invert(naive))
    return values, [
        _Check(
            _flag(unparsable),
            lambda v: (
                f"unparsable timestamp: {_show(v)} "
                "(want ISO 8601 with a UTC offset, e.g. 2024-05-01T12:00:00Z)"
            ),
        ),
        _Check(_flag(bad_day), lambda v: f"bad date in timestamp: {_show(v)}"),
        _Check(
            _flag(naive),
            lambda v: f"naive timestamp (no UTC offset): {_show(v)}; add Z or +HH:MM",
        ),
        _instant_range_check(values),
    ]


def _cast_real_days(
    shaped_text: pa.ChunkedArray, shaped: pa.ChunkedArray, to: pa.DataType
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """Cast well-shaped date/time text; returns (values, ok mask).

    1. Fast path: one cast of the whole column (Arrow rejects impossible days like Feb 30,
       but only by failing the whole cast).
    2. If that fails, find the impossible days with a parse/format round trip (slow, only
       run on bad input), null them, and cast the rest.
    """
    try:
        return pc.cast(shaped_text, to), shaped
    except pa.ArrowInvalid:
        pass
    ok = pc.and_(shaped, _valid_dates(pc.utf8_slice_codeunits(shaped_text, 0, 10)))
    ok = _flag(ok)
    return pc.cast(_nulls_where(shaped_text, pc.invert(ok)), to), ok


def _from_typed(
    col: ColumnSpec, values: pa.ChunkedArray
) -> tuple[pa.ChunkedArray, list[_Check]] | str:
    """Accept a typed (Parquet/Arrow) column, or say why its type cannot hold the column."""
    t = values.type
    if pa.types.is_null(t):
        return pa.chunked_array([pa.nulls(len(values), col.arrow_type)]), []
    if col.kind in ("string", "enum") and pa.types.is_string(t):
        return values, []
    if col.kind == "int" and pa.types.is_integer(t):
        if t == pa.uint64():
            over = _flag(pc.greater(values, pa.scalar(_INT64_MAX, pa.uint64())))
            fitted = pc.cast(_nulls_where(values, over), pa.int64())
            return fitted, [_Check(over, lambda v: f"integer out of range: {v}")]
        return pc.cast(values, pa.int64()), []
    if col.kind == "bool" and pa.types.is_boolean(t):
        return values, []
    if col.kind == "date" and pa.types.is_date(t):
        return _typed_dates(values)
    if col.kind == "timestamp" and pa.types.is_timestamp(t):
        if t.tz is None:
            return (
                f"naive timestamp column ({t} without time zone); "
                "store instants with a UTC time zone"
            )
        return _typed_instants(values, t.unit)
    want = {"string": "text", "enum": "text", "int": "integer", "bool": "boolean"}.get(
        col.kind, col.kind
    )
    return f"has type {t}; expected {want}"


def _normalise(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary, large and view strings become plain strings."""
    t = values.type
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = values.type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        values = values.cast(pa.string())
    return values


def _column_checks(
    spec: TableSpec, col: ColumnSpec, values: pa.ChunkedArray, present: pa.ChunkedArray
) -> list[_Check]:
    """Rules on converted values: identifiers, nullability, enum values, minimum, maximum,
    region."""
    checks: list[_Check] = []
    if spec.is_identifier(col):
        what = "a key column" if col.name in spec.key else "an identifier column"
        checks.append(_Check(_flag(pc.equal(values, "")), lambda v: f"empty value in {what}"))
        checks.append(
            _Check(
                _matches(values, _CONTROL),
                lambda v: f"control character {_first_control(v)} in {what}: {_show(v)}",
            )
        )
    if not col.nullable:
        checks.append(
            _Check(
                _flag(pc.invert(present)),
                lambda v: "null in a non-nullable column",
            )
        )
    if col.kind == "enum":
        allowed = ", ".join(col.values)
        unknown = pc.and_(
            _flag(pc.is_valid(values)),
            pc.invert(_flag(pc.is_in(values, value_set=pa.array(col.values)))),
        )
        checks.append(
            _Check(_flag(unknown), lambda v: f"unknown value {_show(v)} (allowed: {allowed})")
        )
    if col.kind == "int" and col.minimum is not None:
        minimum = col.minimum
        checks.append(
            _Check(
                _flag(pc.less(values, minimum)),
                lambda v: f"must be >= {minimum}, got {v}",
            )
        )
    if col.kind == "int" and col.maximum is not None:
        maximum = col.maximum
        checks.append(
            _Check(
                _flag(pc.greater(values, maximum)),
                lambda v: f"must be <= {maximum}, got {v}",
            )
        )
    if col.name == "region":
        checks.append(
            _Check(
                _flag(pc.and_(pc.is_valid(values), pc.invert(_matches(values, _REGION)))),
                lambda v: f"not an ISO 3166-1 alpha-2 code (2 uppercase letters): {_show(v)}",
            )
        )
    return checks


def conform(raw: RawTable, spec: TableSpec, *, limit: int = MAX_PROBLEMS) -> Conformed:
    """Validate `raw` against `spec` and convert it to the canonical schema.

    1. Columns: a name twice, a name not in the table, or a non-nullable table column not
       in the input is a problem of the whole input (`FILE: column: missing`). A nullable
       column may be left out: it is null in every row. A JSON Lines file without objects
       has no columns to miss: it imports zero rows.
    2. Each column is converted: text is parsed (CSV, JSON Lines, text in Parquet); typed
       Parquet/Arrow columns must have a compatible type (a timestamp without a time zone
       is naive and refused). JSON values must have the right JSON type.
    3. Every instant and date must lie in the accepted range (`consentry.instants`),
       compared before any conversion that could overflow.
    4. Row rules: identifiers (text keys and columns naming keys) neither empty nor holding
       a control character (C0, DEL, C1); nulls in non-nullable columns; enum values;
       minimums and maximums; region shape.
    5. Problems are ordered file-level first, then by row and column; at most `limit` are
       listed, `problem_count` counts all.
    """
    loc = raw.location
    head: list[Problem] = list(raw.problems)
    seen: set[str] = set()
    for name in raw.names:
        if name in seen:
            head.append(Problem(loc, None, name, "column appears more than once"))
        seen.add(name)
    for name in dict.fromkeys(raw.names):
        if name not in spec.column_names:
            head.append(Problem(loc, None, name, f"not a column of table {spec.name}"))
    # JSON Lines without objects names no columns, so it misses none.
    names_columns = not (raw.columns_from_rows and raw.num_rows == 0)
    for col in spec.columns:
        if col.name not in seen and not col.nullable and names_columns:
            head.append(Problem(loc, None, col.name, "missing"))

    arrays = dict(zip(raw.names, raw.arrays, strict=True))
    converted: list[pa.ChunkedArray] = []
    found: list[tuple[int, int, Problem]] = []
    count = len(head)
    for order, col in enumerate(spec.columns):
        if col.name not in arrays:
            converted.append(pa.chunked_array([pa.nulls(raw.num_rows, col.arrow_type)]))
            continue
        original = _normalise(arrays[col.name])
        text = original
        checks: list[_Check] = []
        if col.name in raw.json_types:
            name, want = _JSON_WANT.get(col.kind, _JSON_STRING)
            kinds = raw.json_types[col.name]
            wrong = _flag(
                pc.and_(
                    pc.and_(pc.is_valid(kinds), pc.not_equal(kinds, "NULL")),
                    pc.invert(pc.is_in(kinds, value_set=want)),
                )
            )
            text = _nulls_where(original, wrong)
            checks.append(_Check(wrong, _json_type_message(name), shown=kinds))
        if pa.types.is_string(text.type):
            broken = _invalid_utf8(text)
            if broken is not None:
                text = _nulls_where(text, broken)
                checks.append(_Check(broken, lambda v: "not valid UTF-8 text", shown=broken))
            values, parse_checks = _from_text(col, text)
        else:
            result = _from_typed(col, text)
            if isinstance(result, str):
                head.append(Problem(loc, None, col.name, result))
                count += 1
                converted.append(pa.chunked_array([pa.nulls(raw.num_rows, col.arrow_type)]))
                continue
            values, parse_checks = result
        checks += parse_checks
        # Only a value absent from the input is "null"; one that failed to parse or had the
        # wrong JSON type is already reported once above.
        present = _flag(pc.is_valid(original))
        checks += _column_checks(spec, col, values, present)
        for check in checks:
            hits = pc.indices_nonzero(check.mask)
            count += len(hits)
            shown = original if check.shown is None else check.shown
            for index in hits.slice(0, limit).to_pylist():
                found.append(
                    (
                        raw.row_number(index),
                        order,
                        Problem(
                            loc,
                            raw.row_number(index),
                            col.name,
                            check.message(shown[index].as_py()),
                        ),
                    )
                )
        converted.append(values)

    found.sort(key=lambda item: (item[0], item[1]))
    problems = (head + [p for _, _, p in found])[:limit]
    if problems:
        return Conformed(arrow_schema(spec.name).empty_table(), problems, count)
    table = pa.Table.from_arrays(converted, schema=arrow_schema(spec.name))
    return Conformed(table, [], 0, location=loc, row_numbers=raw.row_numbers)


def conform_arrow(data: pa.Table, spec: TableSpec, *, location: str) -> Conformed:
    """Validate an in-memory Arrow table (rows numbered index + 1)."""
    raw = RawTable(
        location=location,
        names=list(data.column_names),
        arrays=list(data.columns),
        num_rows=data.num_rows,
    )
    return conform(raw, spec)
