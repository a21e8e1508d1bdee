"""Bad input, per table and format: the exact `FILE:ROW: field: message`, and an untouched lake.

Every case puts one bad cell in data row 2 (the second record after the CSV header, line 2
of the JSON Lines file, the second Parquet row) of an otherwise valid file.
"""

from __future__ import annotations

import shutil
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.engine import Lake
from consentry.errors import BadInput
from consentry.schema import MAX_POSTS_PER_ACCESS, TABLES, arrow_schema
from consentry.sources import import_arrow, import_files
from consentry.sources.validate import conform_arrow
from tests.sources.rows import MISSING, SAMPLES, tree_hash, write, write_csv, write_jsonl

FORMATS = ("csv", "jsonl", "parquet")
NAIVE = "naive timestamp (no UTC offset): '2024-05-01T12:00:00'; add Z or +HH:MM"
UNPARSABLE = (
    "unparsable timestamp: 'last tuesday' "
    "(want ISO 8601 with a UTC offset, e.g. 2024-05-01T12:00:00Z)"
)
NULL = "null in a non-nullable column"


@dataclass(frozen=True)
class Case:
    """One bad cell (or a dropped column) and the message every format must give."""

    name: str
    table: str
    column: str
    value: Any
    message: str
    formats: tuple[str, ...] = FORMATS
    json_value: Any = None
    """The JSON value when it differs from `value` (e.g. a JSON number)."""
    by_format: dict[str, str] = field(default_factory=dict)
    """Messages that differ per format."""

    def expected(self, fmt: str, path: Path) -> str:
        message = self.by_format.get(fmt, self.message)
        if self.value is MISSING:
            return f"{path}: {self.column}: {message}"
        return f"{path}:2: {self.column}: {message}"


def _timestamp_cases(table: str, column: str) -> list[Case]:
    return [
        Case(f"{table}-{column}-unparsable", table, column, "last tuesday", UNPARSABLE),
        Case(f"{table}-{column}-naive", table, column, "2024-05-01T12:00:00", NAIVE),
        Case(
            f"{table}-{column}-bad-day",
            table,
            column,
            "2024-02-30T00:00:00Z",
            "bad date in timestamp: '2024-02-30T00:00:00Z'",
        ),
    ]


RANGE = "must lie between 1900-01-01T00:00:00Z and 2200-01-01T00:00:00Z (exclusive)"
DATE_RANGE = "must lie between 1900-01-01 and 2200-01-01 (exclusive)"


def _range_cases(table: str, column: str) -> list[Case]:
    """Text instants (dates) just outside the accepted range, and far outside it."""
    if TABLES[table].column(column).kind == "date":
        values = ["0000-01-01", "1899-12-31", "2200-01-01", "9999-12-31"]
        return [
            Case(
                f"{table}-{column}-range-{v}",
                table,
                column,
                v,
                f"date out of range: {v!r}; {DATE_RANGE}",
            )
            for v in values
        ]
    values = [
        "0000-01-01T00:00:00Z",
        "0001-01-01T00:00:00+14:00",
        "1899-12-31T23:59:59.999999Z",
        "1900-01-01T00:59:59+01:00",
        "2200-01-01T00:00:00Z",
        "9999-12-31T23:59:59-14:00",
    ]
    return [
        Case(
            f"{table}-{column}-range-{v}",
            table,
            column,
            v,
            f"instant out of range: {v!r}; {RANGE}",
        )
        for v in values
    ]


INSTANTS = [
    (table, column.name)
    for table, spec in TABLES.items()
    for column in spec.columns
    if column.kind in ("timestamp", "date")
]


def _missing(table: str, column: str) -> Case:
    return Case(f"{table}-{column}-missing", table, column, MISSING, "missing")


def _what(table: str, column: str) -> str:
    return "a key column" if column in TABLES[table].key else "an identifier column"


def _null(table: str, column: str) -> Case:
    """A null cell. In CSV an empty field of a non-nullable text column is the empty string,
    which an identifier (key) column refuses and any other text column accepts."""
    spec = TABLES[table]
    if spec.column(column).kind != "string":
        return Case(f"{table}-{column}-null", table, column, None, NULL)
    if spec.is_identifier(spec.column(column)):
        return Case(
            f"{table}-{column}-null",
            table,
            column,
            None,
            NULL,
            by_format={"csv": f"empty value in {_what(table, column)}"},
        )
    return Case(f"{table}-{column}-null", table, column, None, NULL, formats=("jsonl", "parquet"))


def _identifier_cases(table: str, column: str) -> list[Case]:
    """Empty, and each kind of control character: C0 (NUL, TAB, LF), DEL and C1 (NEL)."""
    what = _what(table, column)
    cases = [Case(f"{table}-{column}-empty", table, column, "", f"empty value in {what}")]
    for code in (0x00, 0x09, 0x0A, 0x7F, 0x85, 0x9F):
        value = f"k{chr(code)}1"
        message = f"control character U+{code:04X} in {what}: {value!r}"
        cases.append(Case(f"{table}-{column}-U+{code:04X}", table, column, value, message))
    return cases


IDENTIFIERS = [
    (table, column.name)
    for table, spec in TABLES.items()
    for column in spec.columns
    if spec.is_identifier(column)
]


def _json_string_expected(table: str, column: str) -> Case:
    """A JSON number where text belongs (CSV has no types; Parquet writes an int64 column)."""
    return Case(
        f"{table}-{column}-wrong-type",
        table,
        column,
        None,
        "expected a JSON string, got a JSON integer",
        formats=("jsonl",),
        json_value=12345,
    )


CASES: list[Case] = [
    # users
    _missing("users", "region"),
    _null("users", "user_id"),
    _null("users", "protected"),
    *_timestamp_cases("users", "created_at"),
    *_timestamp_cases("users", "deleted_at"),
    _json_string_expected("users", "user_id"),
    Case(
        "users-protected-wrong-type",
        "users",
        "protected",
        "maybe",
        "not a boolean (true/false/1/0): 'maybe'",
        by_format={"jsonl": "expected a JSON boolean, got a JSON string"},
    ),
    Case(
        "users-region-shape",
        "users",
        "region",
        "usa",
        "not an ISO 3166-1 alpha-2 code (2 uppercase letters): 'usa'",
    ),
    Case(
        "users-birth_date-bad",
        "users",
        "birth_date",
        "2001-02-29",
        "bad date: '2001-02-29' (want YYYY-MM-DD)",
    ),
    Case(
        "users-birth_date-shape",
        "users",
        "birth_date",
        "03/02/1990",
        "bad date: '03/02/1990' (want YYYY-MM-DD)",
    ),
    # posts
    _missing("posts", "created_at"),
    _null("posts", "post_id"),
    _null("posts", "visibility"),
    *_timestamp_cases("posts", "created_at"),
    _json_string_expected("posts", "author_id"),
    Case(
        "posts-visibility-enum",
        "posts",
        "visibility",
        "friends",
        "unknown value 'friends' (allowed: public, unlisted, protected, direct)",
    ),
    # consent_events
    _missing("consent_events", "choice"),
    _null("consent_events", "purpose"),
    *_timestamp_cases("consent_events", "at"),
    _json_string_expected("consent_events", "event_id"),
    Case(
        "consent_events-choice-enum",
        "consent_events",
        "choice",
        "maybe",
        "unknown value 'maybe' (allowed: allow, deny)",
    ),
    Case(
        "consent_events-source-enum",
        "consent_events",
        "source",
        "email",
        "unknown value 'email' (allowed: settings, gpc, api, import, support)",
    ),
    # access_events
    _missing("access_events", "posts"),
    _null("access_events", "credential"),
    _null("access_events", "posts"),
    *_timestamp_cases("access_events", "ts"),
    Case(
        "access_events-posts-wrong-type",
        "access_events",
        "posts",
        "many",
        "not an integer: 'many'",
        by_format={"jsonl": "expected a JSON integer, got a JSON string"},
    ),
    Case(
        "access_events-posts-fraction",
        "access_events",
        "posts",
        "2.5",
        "not an integer: '2.5'",
        formats=("csv", "parquet"),
    ),
    Case(
        "access_events-posts-json-float",
        "access_events",
        "posts",
        None,
        "expected a JSON integer, got a JSON number",
        formats=("jsonl",),
        json_value=2.5,
    ),
    Case(
        "access_events-posts-negative",
        "access_events",
        "posts",
        -3,
        "must be >= 0, got -3",
        json_value=-3,
    ),
    Case(
        "access_events-posts-over-maximum",
        "access_events",
        "posts",
        MAX_POSTS_PER_ACCESS + 1,
        f"must be <= {MAX_POSTS_PER_ACCESS}, got {MAX_POSTS_PER_ACCESS + 1}",
        json_value=MAX_POSTS_PER_ACCESS + 1,
    ),
    Case(
        "access_events-posts-2-to-the-62",
        "access_events",
        "posts",
        2**62,
        f"must be <= {MAX_POSTS_PER_ACCESS}, got {2**62}",
        json_value=2**62,
        by_format={
            "csv": f"integer out of range: {2**62}",
            "jsonl": f"integer out of range: {2**62}",
        },
    ),
    # entities
    _missing("entities", "entity"),
    _null("entities", "credential"),
    *_timestamp_cases("entities", "valid_from"),
    _json_string_expected("entities", "entity"),
    *(case for table, column in IDENTIFIERS for case in _identifier_cases(table, column)),
    *(case for table, column in INSTANTS for case in _range_cases(table, column)),
]


def _params() -> list[Any]:
    return [
        pytest.param(case, fmt, id=f"{case.name}-{fmt}") for case in CASES for fmt in case.formats
    ]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.lists(st.text(max_size=4), min_size=1, max_size=8))
def test_identifiers_are_refused_exactly_when_empty_or_holding_a_control(
    names: list[str],
) -> None:
    """Against the rule in Python: Unicode category Cc is exactly C0, DEL and C1."""
    rows = [dict(SAMPLES["access_events"][0], request_id=f"r{i}") for i in range(len(names))]
    data = pa.Table.from_pylist(rows, schema=arrow_schema("access_events"))
    data = data.set_column(2, "credential", pa.array(names, pa.string()))
    result = conform_arrow(data, TABLES["access_events"], location="prop")
    bad = [
        i + 1
        for i, name in enumerate(names)
        if not name or any(unicodedata.category(c) == "Cc" for c in name)
    ]
    assert [p.row for p in result.problems] == bad
    assert all(p.field == "credential" for p in result.problems)


def test_every_table_has_cases() -> None:
    assert {c.table for c in CASES} == set(TABLES)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake holding the valid sample rows of every table, built once per module."""
    work = tmp_path_factory.mktemp("seed")
    lake = Lake(work / "lake")
    for table, rows in SAMPLES.items():
        import_files(lake, table, [write_csv(work / f"seed-{table}.csv", table, rows)])
    return lake.root


@pytest.fixture
def lake(seeded: Path, tmp_path: Path) -> Lake:
    """A private copy of the seeded lake."""
    return Lake(Path(shutil.copytree(seeded, tmp_path / "lake")))


@pytest.mark.parametrize(("case", "fmt"), _params())
def test_bad_cell_is_reported_and_lake_untouched(
    case: Case, fmt: str, lake: Lake, tmp_path: Path
) -> None:
    if fmt == "jsonl" and case.json_value is not None:
        raw = {1: {case.column: case.json_value}}
    else:
        raw = {1: {case.column: case.value}}
    if case.value is MISSING:
        raw = {i: {case.column: MISSING} for i in range(len(SAMPLES[case.table]))}
    path = write(fmt, tmp_path / f"bad-{case.table}", case.table, SAMPLES[case.table], raw=raw)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, case.table, [path])
    assert [str(p) for p in info.value.problems] == [case.expected(fmt, path)]
    assert tree_hash(lake.root) == before


OPTIONAL = [
    (table, column.name)
    for table, spec in sorted(TABLES.items())
    for column in spec.columns
    if column.nullable
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("table", "column"), OPTIONAL)
def test_a_nullable_column_may_be_left_out(
    table: str, column: str, fmt: str, tmp_path: Path
) -> None:
    lake = Lake(tmp_path / "lake")
    rows = SAMPLES[table]
    if table == "entities":
        # One row per credential: without either end the sample rows of key-1 would overlap.
        rows = [dict(r, credential=f"key-{i}") for i, r in enumerate(rows)]
    raw = {i: {column: MISSING} for i in range(len(rows))}
    path = write(fmt, tmp_path / f"no-{column}", table, rows, raw=raw)
    import_files(lake, table, [path])
    key = TABLES[table].key
    stored = {tuple(r[k] for k in key): r for r in lake.read_arrow(table).to_pylist()}
    # Without the column every row has null there (a key part too: the last row wins).
    expected = {tuple(r[k] for k in key): r for r in (dict(r, **{column: None}) for r in rows)}
    assert stored == expected


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_DAY = (date(2200, 1, 1) - EPOCH.date()).days
TYPED_OUT_OF_RANGE: list[tuple[str, pa.DataType, int, str]] = [
    ("timestamp", pa.timestamp("s", tz="UTC"), 2**62, "4611686018427387904 s since "),
    ("timestamp", pa.timestamp("ms", tz="UTC"), 2**63 - 1, "9223372036854775807 ms since "),
    ("timestamp", pa.timestamp("us", tz="UTC"), -62167219200000000, "-62167219200000000 us "),
    ("timestamp", pa.timestamp("ns", tz="UTC"), -(2**63), "1677-09-21T00:12:43.145224Z"),
    ("timestamp", pa.timestamp("ms", tz="UTC"), LATEST_DAY * 86_400_000, "2200-01-01T00:00:00Z"),
    ("timestamp", pa.timestamp("us", tz="Asia/Tokyo"), -2208988800000001, "1899-12-31T23:"),
    ("date", pa.date32(), 2**31 - 1, "2147483647 days since 1970-01-01"),
    ("date", pa.date32(), -719528, "-719528 days since 1970-01-01"),
    ("date", pa.date32(), LATEST_DAY, "2200-01-01"),
    ("date", pa.date64(), 2**62, "53375995583 days since 1970-01-01"),
    ("date", pa.date64(), -2208988800001, "1899-12-31"),
]
"""(kind, stored type, stored count, how the message shows it): counts outside the range,
some that no Python datetime can hold, some that would wrap around in microseconds."""


def _import(lake: Lake, table: str, source: Path | pa.Table) -> None:
    if isinstance(source, Path):
        import_files(lake, table, [source])
    else:
        import_arrow(lake, table, source, origin="arrow")


def _counts(values: list[Any], stored: pa.DataType) -> pa.Array:
    """Canonical Python values as counts of `stored`'s unit, then as `stored`."""
    unit = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
    if pa.types.is_timestamp(stored):
        per = unit[stored.unit]
        counts = [None if v is None else int((v - EPOCH).total_seconds()) * per for v in values]
        return pa.array(counts, pa.int64()).cast(stored)
    days = [None if v is None else (v - EPOCH.date()).days for v in values]
    if stored == pa.date32():
        return pa.array(days, pa.int32()).cast(stored)
    ms = [None if d is None else d * 86_400_000 for d in days]
    return pa.array(ms, pa.int64()).cast(stored)


def _typed_params() -> list[Any]:
    """Each out-of-range count in each column of its kind, as Parquet (which stores neither
    seconds nor date64) and as Arrow data given to `import_arrow`."""
    return [
        pytest.param(
            table,
            column,
            kind,
            stored,
            count,
            shown,
            via,
            id=f"{table}-{column}-{stored}-{count}-{via}",
        )
        for table, column in INSTANTS
        for kind, stored, count, shown in TYPED_OUT_OF_RANGE
        if TABLES[table].column(column).kind == kind
        for via in ("parquet", "arrow")
        if not (via == "parquet" and (stored == pa.date64() or getattr(stored, "unit", "") == "s"))
    ]


@pytest.mark.parametrize(
    ("table", "column", "kind", "stored", "count", "shown", "via"), _typed_params()
)
def test_typed_instants_and_dates_out_of_range_are_refused(
    table: str,
    column: str,
    kind: str,
    stored: pa.DataType,
    count: int,
    shown: str,
    via: str,
    lake: Lake,
    tmp_path: Path,
) -> None:
    data = pa.Table.from_pylist(SAMPLES[table], schema=arrow_schema(table))
    values = _counts(data[column].to_pylist(), stored)
    counts = pa.array([count], pa.int32() if stored == pa.date32() else pa.int64())
    bad = pa.concat_arrays([values[:1], counts.cast(stored), values[2:]])
    data = data.set_column(data.column_names.index(column), column, bad)
    source: Path | pa.Table = data
    if via == "parquet":
        source = tmp_path / "typed.parquet"
        pq.write_table(data, source)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        _import(lake, table, source)
    (problem,) = info.value.problems
    assert (problem.row, problem.field) == (2, column)
    what = "instant" if kind == "timestamp" else "date"
    assert problem.message.startswith(f"{what} out of range: {shown}")
    assert problem.message.endswith(RANGE if kind == "timestamp" else DATE_RANGE)
    assert tree_hash(lake.root) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_instants_and_dates_at_the_ends_of_the_range_are_accepted(
    fmt: str, lake: Lake, tmp_path: Path
) -> None:
    first, last = (
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2199, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    rows = [
        dict(SAMPLES["users"][0], user_id="first", created_at=first, birth_date=date(1900, 1, 1)),
        dict(SAMPLES["users"][0], user_id="last", created_at=last, birth_date=date(2199, 12, 31)),
    ]
    # Written with an offset, the same instants are still inside.
    raw = {
        0: {"deleted_at": "1900-01-01T01:00:00+01:00"},
        1: {"deleted_at": "2200-01-01T00:59:59+01:00"},
    }
    import_files(lake, "users", [write(fmt, tmp_path / "ends", "users", rows, raw=raw)])
    got = {r["user_id"]: r for r in lake.read_arrow("users").to_pylist()}
    assert (got["first"]["created_at"], got["first"]["birth_date"]) == (first, date(1900, 1, 1))
    assert (got["last"]["created_at"], got["last"]["birth_date"]) == (last, date(2199, 12, 31))
    assert got["first"]["deleted_at"] == first
    assert got["last"]["deleted_at"] == datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_typed_instants_of_any_unit_inside_the_range_are_kept(lake: Lake) -> None:
    """Nanoseconds are truncated to microseconds; a date64 that is not midnight floors."""
    data = pa.table(
        {
            "user_id": ["ns"],
            "created_at": pa.array([1714564800 * 10**9 + 1999], pa.timestamp("ns", tz="UTC")),
            "region": ["FR"],
            "birth_date": pa.array([-1], pa.date64()),
            "protected": [False],
        }
    )
    import_arrow(lake, "users", data, origin="arrow")
    row = next(r for r in lake.read_arrow("users").to_pylist() if r["user_id"] == "ns")
    assert row["created_at"] == datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert row["birth_date"] == date(1969, 12, 31)


@pytest.mark.parametrize("via", ["parquet", "arrow"])
def test_text_that_is_not_utf8_is_refused(via: str, lake: Lake, tmp_path: Path) -> None:
    """Parquet and Arrow strings are not checked when read; CSV and JSON Lines are."""
    data = pa.Table.from_pylist(SAMPLES["posts"], schema=arrow_schema("posts"))
    for name in ("post_id", "text"):
        raw = pa.array([b"ok", b"bad\xff", b"fine"], pa.binary()).view(pa.string())
        data = data.set_column(data.column_names.index(name), name, raw)
    source: Path | pa.Table = data
    if via == "parquet":
        source = tmp_path / "posts.parquet"
        pq.write_table(data, source)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        _import(lake, "posts", source)
    location = str(source) if via == "parquet" else "arrow"
    assert [str(p) for p in info.value.problems] == [
        f"{location}:2: post_id: not valid UTF-8 text",
        f"{location}:2: text: not valid UTF-8 text",
    ]
    assert tree_hash(lake.root) == before


@pytest.mark.parametrize("table", sorted(TABLES))
def test_naive_parquet_timestamp_column_is_refused(table: str, lake: Lake, tmp_path: Path) -> None:
    data = pa.Table.from_pylist(SAMPLES[table], schema=arrow_schema(table))
    column = next(c.name for c in TABLES[table].columns if c.kind == "timestamp")
    index = data.column_names.index(column)
    naive = data.column(column).cast(pa.timestamp("us"))
    data = data.set_column(index, pa.field(column, pa.timestamp("us")), naive)
    path = tmp_path / f"{table}.parquet"
    pq.write_table(data, path)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, table, [path])
    assert [str(p) for p in info.value.problems] == [
        f"{path}: {column}: naive timestamp column (timestamp[us] without time zone); "
        "store instants with a UTC time zone"
    ]
    assert tree_hash(lake.root) == before


@pytest.mark.parametrize("table", sorted(TABLES))
def test_wrong_parquet_column_type_is_refused(table: str, lake: Lake, tmp_path: Path) -> None:
    key = TABLES[table].key[0]
    rows = [dict(r, **{key: i}) for i, r in enumerate(SAMPLES[table])]
    columns = {
        c.name: pa.array([r[c.name] for r in rows], pa.int64() if c.name == key else c.arrow_type)
        for c in TABLES[table].columns
    }
    path = tmp_path / f"{table}.parquet"
    pq.write_table(pa.table(columns), path)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, table, [path])
    assert [str(p) for p in info.value.problems] == [
        f"{path}: {key}: has type int64; expected text"
    ]
    assert tree_hash(lake.root) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_extra_column_is_named(fmt: str, lake: Lake, tmp_path: Path) -> None:
    rows = [dict(r, mood="happy") for r in SAMPLES["posts"]]
    if fmt == "parquet":
        path = tmp_path / "extra.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = write(fmt, tmp_path / "extra", "posts", rows)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [path])
    assert [str(p) for p in info.value.problems] == [f"{path}: mood: not a column of table posts"]
    assert tree_hash(lake.root) == before


def test_problems_in_several_files_all_reported_and_nothing_written(
    lake: Lake, tmp_path: Path
) -> None:
    good = write_csv(
        tmp_path / "good.csv",
        "posts",
        [dict(r, post_id="n" + r["post_id"]) for r in SAMPLES["posts"]],
    )
    bad1 = write_csv(tmp_path / "bad1.csv", "posts", SAMPLES["posts"], raw={0: {"visibility": "x"}})
    bad2 = write_jsonl(tmp_path / "bad2.jsonl", "posts", SAMPLES["posts"], raw={2: {"lang": 7}})
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [good, bad1, bad2])
    assert [str(p) for p in info.value.problems] == [
        f"{bad1}:1: visibility: unknown value 'x' (allowed: public, unlisted, protected, direct)",
        f"{bad2}:3: lang: expected a JSON string, got a JSON integer",
    ]
    assert tree_hash(lake.root) == before


def test_at_most_twenty_problems_in_row_order(lake: Lake, tmp_path: Path) -> None:
    rows = [dict(SAMPLES["access_events"][0], request_id=f"r{i}") for i in range(50)]
    raw = {i: {"posts": "x", "ts": "never"} for i in range(50)}
    path = write_csv(tmp_path / "many.csv", "access_events", rows, raw=raw)
    with pytest.raises(BadInput) as info:
        import_files(lake, "access_events", [path])
    problems = info.value.problems
    assert len(problems) == 20
    assert [(p.row, p.field) for p in problems[:4]] == [
        (1, "ts"),
        (1, "posts"),
        (2, "ts"),
        (2, "posts"),
    ]
    assert problems[-1].row == 10


def test_csv_row_numbers_count_records_not_lines(lake: Lake, tmp_path: Path) -> None:
    # Row 2 of the samples has a quoted newline in `text`; row 3 is still row 3.
    path = write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"], raw={2: {"visibility": "x"}})
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [path])
    assert [p.row for p in info.value.problems] == [3]


def test_csv_ragged_record_is_reported_with_its_row(lake: Lake, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"])
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.append("p9,u1,2024-05-01T12:00:00Z,hi,public,en,,surplus")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [path])
    assert [str(p) for p in info.value.problems] == [f"{path}:4: expected 7 fields, got 8"]


def test_jsonl_reports_line_numbers_counting_blank_lines(lake: Lake, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", "posts", SAMPLES["posts"], raw={2: {"choice": 1}})
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(1, "")
    lines.insert(2, "[1, 2]")
    lines.insert(3, "{oops")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [path])
    assert [str(p) for p in info.value.problems] == [
        f"{path}:3: not a JSON object",
        f"{path}:4: not a JSON object",
        f"{path}: choice: not a column of table posts",
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "x.txt",
            b"a,b\n",
            "unknown format '.txt'; use one of .parquet, .pq, .csv, .jsonl, .ndjson",
        ),
        ("x.csv", b"", "empty file: no header"),
        ("x.parquet", b"not parquet", "cannot read Parquet"),
        ("x.jsonl", b"\xff\xfe\n", "cannot read JSON Lines (UTF-8 expected)"),
    ],
)
def test_unreadable_files(
    name: str, content: bytes, message: str, lake: Lake, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, "posts", [path])
    assert str(info.value.problems[0]).startswith(f"{path}: {message}")
    assert tree_hash(lake.root) == before


def test_jsonl_without_objects_imports_nothing(lake: Lake, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    before = lake.read_arrow("posts")
    result = import_files(lake, "posts", [path])
    assert (result.rows_read, result.rows_new, result.rows_replaced) == (0, 0, 0)
    assert lake.read_arrow("posts") == before


def test_missing_file_and_unknown_table(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such file"):
        import_files(lake, "posts", [tmp_path / "nope.csv"])
    with pytest.raises(BadInput, match="unknown table 'tweets'"):
        import_files(lake, "tweets", [tmp_path / "nope.csv"])
    with pytest.raises(BadInput, match="no files given"):
        import_files(lake, "posts", [])


def test_import_arrow_reports_origin_and_index(lake: Lake) -> None:
    data = pa.Table.from_pylist(SAMPLES["posts"], schema=arrow_schema("posts"))
    bad = data.set_column(4, "visibility", pa.array(["public", "public", "secret"], pa.string()))
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_arrow(lake, "posts", bad, origin="mastodon:db")
    assert [str(p) for p in info.value.problems] == [
        "mastodon:db:3: visibility: unknown value 'secret' "
        "(allowed: public, unlisted, protected, direct)"
    ]
    assert tree_hash(lake.root) == before


def test_import_arrow_accepts_other_zones_and_units(lake: Lake) -> None:
    paris = pa.timestamp("ns", tz="Europe/Paris")
    data = pa.table(
        {
            "request_id": ["z1"],
            "ts": pa.array([datetime(2024, 5, 1, 10, 0, tzinfo=UTC)], paris),
            "credential": pa.array(["k"], pa.large_string()),
            "posts": pa.array([3], pa.uint8()),
            "endpoint": pa.array([None], pa.null()),
        }
    )
    import_arrow(lake, "access_events", data, origin="test")
    row = next(r for r in lake.read_arrow("access_events").to_pylist() if r["request_id"] == "z1")
    assert row["ts"] == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert row["posts"] == 3
    assert row["endpoint"] is None
