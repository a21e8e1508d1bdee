"""Read an input file into raw columns plus the row numbers problems are reported with.

Readers do no validation beyond "can this file be read at all"; `consentry.sources.validate`
turns the raw columns into a canonical table. Row numbers (documented in docs/tables.md):

1. CSV: the data record number, the header not counted (row 1 is the first record after
   the header; a record with a quoted newline is still one row).
2. JSON Lines: the physical line number (blank lines are skipped but still counted).
3. Parquet (and Arrow from connectors): the row index + 1.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from consentry.errors import BadInput, Problem
from consentry.schema import TableSpec

__all__ = ["FORMATS", "RawTable", "read_csv", "read_file", "read_jsonl", "read_parquet"]

FORMATS: dict[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
"""File extension (lowercase) -> input format."""

MAX_PROBLEMS = 20


@dataclass(slots=True)
class RawTable:
    """Columns as read, before validation.

    `json_types[name]` (JSON Lines only) holds each value's JSON type as DuckDB names it
    (VARCHAR, BIGINT, UBIGINT, DOUBLE, BOOLEAN, NULL, OBJECT, ARRAY; null when the key is
    absent), so validation can reject a number where a string belongs.
    """

    location: str
    names: list[str]
    arrays: list[pa.ChunkedArray]
    num_rows: int
    row_numbers: pa.Array | None = None
    """Row number of each row for messages; None means index + 1."""
    json_types: dict[str, pa.ChunkedArray] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    """File-level problems found while reading (bad lines)."""
    columns_from_rows: bool = False
    """True when columns are known only from the rows (JSON Lines): an input without rows
    then has no missing columns."""

    def row_number(self, index: int) -> int:
        if self.row_numbers is None:
            return index + 1
        return int(self.row_numbers[index].as_py())


def _unreadable(path: Path, what: str, exc: BaseException) -> BadInput:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return BadInput(Problem(location=str(path), row=None, field=None, message=f"{what}: {detail}"))


def read_csv(path: Path, spec: TableSpec) -> RawTable:
    """Read a CSV file with a header row; every canonical column is read as text.

    1. UTF-8 (a leading byte order mark is dropped by Arrow), comma separated, `"` quoting;
       quoted values may span lines.
    2. An unquoted empty field is null; a quoted empty field (`""`) is the empty string.
       In a non-nullable text column (kind `string`) an empty field is the empty string
       either way: most CSV writers do not quote empty strings, and a post's text may be
       empty. (Key columns still refuse the empty string, see validation.)
    3. Records with the wrong number of fields are reported by data row number (found by a
       second, single-threaded pass: only then does Arrow know record numbers).
    """
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(spec.column_names, pa.string()),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],
    )
    bad_rows: list[Any] = []

    def collect(row: Any) -> str:
        bad_rows.append(row)
        return "skip"

    def read(threads: bool, handler: Callable[[Any], str]) -> pa.Table:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=threads, block_size=16 << 20),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=handler),
            convert_options=convert,
        )

    try:
        data = read(True, collect)
        if bad_rows:
            bad_rows.clear()
            data = read(False, collect)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        if "Empty CSV file" in str(exc):
            raise BadInput(
                Problem(location=str(path), row=None, field=None, message="empty file: no header")
            ) from None
        raise _unreadable(path, "cannot read CSV", exc) from None
    problems = [
        Problem(
            location=str(path),
            # Arrow counts the header as record 1.
            row=(row.number - 1) if row.number is not None else None,
            field=None,
            message=f"expected {row.expected_columns} fields, got {row.actual_columns}",
        )
        for row in bad_rows[:MAX_PROBLEMS]
    ]
    text_columns = {c.name for c in spec.columns if c.kind == "string" and not c.nullable}
    arrays = [
        pc.fill_null(array, "") if name in text_columns else array
        for name, array in zip(data.column_names, data.columns, strict=True)
    ]
    return RawTable(
        location=str(path),
        names=list(data.column_names),
        arrays=arrays,
        num_rows=data.num_rows,
        problems=problems,
    )


# DuckDB's JSON functions parse each line in C++; no Python runs per line.
_JSON_VALID_SQL = """
SELECT n, line, json_valid(line) AND starts_with(ltrim(line), '{') AS ok
FROM lines
WHERE trim(line) <> ''
"""


def read_jsonl(path: Path, spec: TableSpec) -> RawTable:
    """Read a JSON Lines file: one JSON object per line.

    1. A leading UTF-8 byte order mark is dropped. The file is split into lines in Arrow;
       blank lines are skipped (still counted).
    2. A line that is not a JSON object is a problem at that line.
    3. A column is present when any object has the key; an absent key is null. Keys that are
       not columns of the table are reported as extra columns.
    4. For each column DuckDB extracts the value as text plus its JSON type.
    """
    try:
        raw = path.read_bytes()
        # Editors on Windows start UTF-8 files with a byte order mark; it is not data.
        raw = raw.removeprefix(codecs.BOM_UTF8)
        text = pa.array([raw], pa.large_binary()).cast(pa.large_string())
    except (OSError, pa.ArrowInvalid) as exc:
        raise _unreadable(path, "cannot read JSON Lines (UTF-8 expected)", exc) from None
    del raw
    lines = pc.list_flatten(pc.split_pattern(text, "\n"))
    del text
    lines = pc.utf8_rtrim(lines, characters="\r")
    numbered = pa.table({"n": np.arange(1, len(lines) + 1, dtype=np.int64), "line": lines})
    con = duckdb.connect()
    try:
        con.register("lines", numbered)
        checked = con.sql(_JSON_VALID_SQL).to_arrow_table()
        bad = checked.filter(pc.invert(checked["ok"]))
        problems = [
            Problem(location=str(path), row=n, field=None, message="not a JSON object")
            for n in bad["n"].slice(0, MAX_PROBLEMS).to_pylist()
        ]
        good = checked.filter(checked["ok"]).select(["n", "line"])
        con.unregister("lines")
        del numbered, lines, checked
        con.register("good", good)
        keys = [
            k for (k,) in con.sql("SELECT DISTINCT unnest(json_keys(line)) FROM good").fetchall()
        ]
        known = [c for c in spec.column_names if c in keys]
        extra = sorted(k for k in keys if k not in spec.column_names)
        selects = ["n"]
        for i, name in enumerate(known):
            json_path = "$." + name
            selects.append(f"json_type(line, '{json_path}') AS t{i}")
            selects.append(f"line ->> '{json_path}' AS v{i}")
        extracted = con.sql(f"SELECT {', '.join(selects)} FROM good ORDER BY n").to_arrow_table()
    except duckdb.Error as exc:
        raise _unreadable(path, "cannot read JSON Lines", exc) from None
    finally:
        con.close()
    return RawTable(
        location=str(path),
        names=known + extra,
        arrays=[extracted[f"v{i}"] for i in range(len(known))]
        + [pa.chunked_array([pa.nulls(extracted.num_rows, pa.string())]) for _ in extra],
        num_rows=extracted.num_rows,
        row_numbers=extracted["n"].combine_chunks(),
        json_types={name: extracted[f"t{i}"] for i, name in enumerate(known)},
        problems=problems,
        columns_from_rows=True,
    )


def read_parquet(path: Path, spec: TableSpec) -> RawTable:
    """Read a Parquet file with its own column types (validation decides if they fit)."""
    try:
        data = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise _unreadable(path, "cannot read Parquet", exc) from None
    return RawTable(
        location=str(path),
        names=list(data.column_names),
        arrays=list(data.columns),
        num_rows=data.num_rows,
    )


def read_file(path: Path, spec: TableSpec) -> RawTable:
    """Read `path` by its extension: .parquet/.pq, .csv, .jsonl/.ndjson; else bad input."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BadInput(
            Problem(
                location=str(path),
                row=None,
                field=None,
                message=f"unknown format {path.suffix or '(no extension)'!r}; "
                f"use one of {', '.join(FORMATS)}",
            )
        )
    if not path.is_file():
        raise BadInput(Problem(location=str(path), row=None, field=None, message="no such file"))
    if kind == "csv":
        return read_csv(path, spec)
    if kind == "jsonl":
        return read_jsonl(path, spec)
    return read_parquet(path, spec)
