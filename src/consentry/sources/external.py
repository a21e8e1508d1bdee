"""Checking an external source before it is registered (`consentry source add`).

An external source is the platform's own copy of a canonical table, read in place: a Delta
table or a folder of Parquet files, on a local path or `s3://…`, with a column map
(`consentry.engine.external`). Before the registry names it, every row must pass the same
validation an import applies (`conform_arrow`), and the table's key must be unique across
the whole source. Nothing here writes anything. Rules in docs/sources.md.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from consentry.engine.external import EXTERNAL_TABLES, ExternalTable
from consentry.engine.lake import s3_filesystem, s3_options
from consentry.errors import BadInput, Problem, did_you_mean
from consentry.schema import TableSpec, table_spec
from consentry.sources.entities import check_entities_merge
from consentry.sources.mastodon import mastodon_url, read_mastodon_source
from consentry.sources.readers import MAX_PROBLEMS
from consentry.sources.validate import Conformed, conform_arrow

__all__ = [
    "COMMAND_LINE",
    "CheckedSource",
    "check_source",
    "normalise_location",
    "parse_column_map",
]

COMMAND_LINE = "command line"
"""Where problems with the command's own arguments are located."""

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class CheckedSource:
    """A source that passed every check: the entry to register, and what it holds."""

    entry: ExternalTable
    files: int
    """Data files read (a Delta table's current version's, or every Parquet file)."""
    rows: int


@dataclass(frozen=True, slots=True)
class _DataFile:
    """One data file of a source: how problems name it, its columns, and its reader."""

    location: str
    names: Sequence[str]
    read: Callable[[list[str]], pa.Table]


def parse_column_map(table: str, entries: Sequence[str]) -> dict[str, str]:
    """`--map` values (each `canon=src[,canon=src…]`) as {canonical: source column}.

    A malformed entry (no `=`, an empty side), a name that is not a column of `table`, and
    a canonical column named twice are bad input naming the entry.
    """
    spec = table_spec(table)
    columns: dict[str, str] = {}
    problems: list[Problem] = []
    for value in entries:
        for raw in value.split(","):
            entry = raw.strip()
            canonical, sep, source = (part.strip() for part in entry.partition("="))
            if not sep or not canonical or not source:
                problems.append(
                    Problem(
                        COMMAND_LINE,
                        None,
                        "--map",
                        f"bad entry {entry!r}: want CANONICAL=SOURCE, e.g. post_id=id",
                    )
                )
            elif canonical not in spec.column_names:
                hint = did_you_mean(canonical, spec.column_names)
                message = f"bad entry {entry!r}: {canonical!r} is not a column of {table}"
                problems.append(
                    Problem(COMMAND_LINE, None, "--map", f"{message}; {hint}" if hint else message)
                )
            elif canonical in columns:
                problems.append(
                    Problem(
                        COMMAND_LINE,
                        None,
                        "--map",
                        f"bad entry {entry!r}: {canonical!r} is already mapped to "
                        f"{columns[canonical]!r}",
                    )
                )
            else:
                columns[canonical] = source
    if problems:
        raise BadInput(problems)
    # A column mapped to its own name is the default: the registry leaves it out.
    return {c: s for c, s in columns.items() if c != s}


def normalise_location(location: str) -> str:
    """The location as the registry keeps it: `s3://bucket/prefix` without a trailing
    slash, or a local path made absolute (jobs run from any directory). Other URL schemes
    are bad input."""
    text = location.strip()
    if text.startswith("s3://"):
        trimmed = text.rstrip("/")
        if len(trimmed) <= len("s3://"):
            raise BadInput(Problem(COMMAND_LINE, None, "LOCATION", f"no bucket in {location!r}"))
        return trimmed
    if _SCHEME.match(text):
        raise BadInput(
            Problem(
                COMMAND_LINE,
                None,
                "LOCATION",
                f"unsupported location {location!r}: use a local path or s3://bucket/prefix",
            )
        )
    return str(Path(text).expanduser().resolve())


def _remote(location: str) -> bool:
    return location.startswith("s3://")


def _bad_location(location: str, message: str) -> BadInput:
    return BadInput(Problem(location, None, None, message))


def _delta_files(location: str, env: Mapping[str, str]) -> tuple[list[str], list[_DataFile]]:
    """The table's column names and its current version's data files (partition columns
    included, as delta-rs's dataset fills them in)."""
    from deltalake import DeltaTable

    if not _remote(location):
        path = Path(location)
        if not path.exists():
            raise _bad_location(location, "no such file or directory")
        if not (path / "_delta_log").is_dir():
            kind = "a folder" if path.is_dir() else "a file"
            raise _bad_location(
                location,
                f"not a Delta table: {kind} without a _delta_log folder "
                "(for a folder of Parquet files, use --parquet)",
            )
    try:
        table = DeltaTable(location, storage_options=s3_options(env) if _remote(location) else None)
        dataset = table.to_pyarrow_dataset()
    except Exception as exc:  # delta-rs maps Rust errors to several exception types
        raise _bad_location(location, f"not a readable Delta table: {exc}") from None
    schema = dataset.schema
    # Problems name a local table's files by path, as the registry names the table.
    root = table.table_uri.rstrip("/") if _remote(location) else location

    def reader(fragment: Any) -> Callable[[list[str]], pa.Table]:
        def read(columns: list[str]) -> pa.Table:
            return fragment.to_table(schema=schema, columns=columns)

        return read

    files = [
        _DataFile(f"{root}/{fragment.path}", schema.names, reader(fragment))
        for fragment in dataset.get_fragments()
    ]
    return list(schema.names), files


def _mastodon_file(entry: ExternalTable) -> _DataFile:
    """A Mastodon source as one "file": its table as the connector reads it now (problems
    are located at `mastodon:` + its URL, password hidden)."""
    where = "mastodon:" + mastodon_url(entry.location).render_as_string(hide_password=True)
    table = read_mastodon_source(entry)[entry.table]
    return _DataFile(where, table.column_names, lambda columns: table.select(columns))


def _hidden(relative: str) -> bool:
    """A file or folder name beginning with `.` or `_` (Spark's `_SUCCESS`, temp files),
    skipped as PyArrow's dataset discovery skips them."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _parquet_files(location: str, env: Mapping[str, str]) -> list[_DataFile]:
    """Every `*.parquet` file under the folder (subfolders too), in path order."""
    fs: pafs.FileSystem
    if _remote(location):
        fs = s3_filesystem(s3_options(env))
        base = location.removeprefix("s3://")
        try:
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except OSError as exc:
            raise _bad_location(location, f"cannot list the prefix: {exc}") from None
        found = [
            (info.path, f"s3://{info.path}")
            for info in infos
            if info.type == pafs.FileType.File
            and info.path.endswith(".parquet")
            and not _hidden(info.path[len(base) :])
        ]
    else:
        folder = Path(location)
        if not folder.exists():
            raise _bad_location(location, "no such file or directory")
        if not folder.is_dir():
            raise _bad_location(location, "not a folder (a Parquet source is a folder of files)")
        fs = pafs.LocalFileSystem()
        found = [
            (str(p), str(p))
            for p in folder.rglob("*.parquet")
            if p.is_file() and not _hidden(p.relative_to(folder).as_posix())
        ]
    if not found:
        raise _bad_location(location, "no .parquet files here")
    files = []
    for path, shown in sorted(found):
        try:
            names = pq.read_schema(path, filesystem=fs).names
        except (OSError, pa.ArrowException) as exc:
            raise _bad_location(shown, f"not a readable Parquet file: {exc}") from None

        def read(columns: list[str], path: str = path) -> pa.Table:
            return pq.read_table(path, columns=columns, filesystem=fs)

        files.append(_DataFile(shown, names, read))
    return files


def _missing_columns(location: str, names: Sequence[str], entry: ExternalTable) -> list[Problem]:
    """A problem per canonical column whose source column is not among `names`: the field
    is the source's column, the message names the canonical one."""
    spec = table_spec(entry.table)
    present = set(names)
    problems = []
    for canonical in spec.column_names:
        source = entry.source_column(canonical)
        if source in present:
            continue
        if source == canonical:
            message = f"missing (name the column holding {canonical} with --map {canonical}=COLUMN)"
        else:
            message = f"missing (holds {canonical}: --map {canonical}={source})"
        hint = did_you_mean(source, names)
        problems.append(Problem(location, None, source, f"{message}; {hint}" if hint else message))
    return problems


def _same_source_columns(entry: ExternalTable) -> list[Problem]:
    """Two canonical columns read from one source column: refused, since a purge could not
    change one without the other."""
    spec = table_spec(entry.table)
    by_source: dict[str, list[str]] = {}
    for canonical in spec.column_names:
        by_source.setdefault(entry.source_column(canonical), []).append(canonical)
    return [
        Problem(
            COMMAND_LINE,
            None,
            "--map",
            f"source column {source!r} would hold {' and '.join(map(repr, canonicals))}",
        )
        for source, canonicals in by_source.items()
        if len(canonicals) > 1
    ]


def _renamed(data: pa.Table, entry: ExternalTable, spec: TableSpec) -> pa.Table:
    """The source's mapped columns under their canonical names, in the spec's order."""
    return pa.table({c: data.column(entry.source_column(c)) for c in spec.column_names})


def _sql_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Keys:
    """Every row's key, file and row number, in DuckDB (spilling to `scratch` when the keys
    outgrow memory); finds keys that occur more than once across the whole source."""

    def __init__(self, spec: TableSpec, scratch: Path) -> None:
        self.spec = spec
        self.locations: list[str] = []
        self.con = duckdb.connect()
        self.con.execute("SET enable_progress_bar = false")
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET temp_directory = '{str(scratch).replace(chr(39), chr(39) * 2)}'")
        self.created = False

    def add(self, checked: Conformed) -> None:
        table = checked.table
        n = table.num_rows
        rows = (
            pc.cast(checked.row_numbers, pa.int64())
            if checked.row_numbers is not None
            else pa.array(np.arange(1, n + 1, dtype=np.int64))
        )
        batch = table.select(list(self.spec.key))
        batch = batch.append_column(
            "_file", pa.repeat(pa.scalar(len(self.locations), pa.int32()), n)
        )
        batch = batch.append_column("_row", rows)
        self.locations.append(checked.location)
        self.con.register("batch", batch)
        if self.created:
            self.con.execute("INSERT INTO keys SELECT * FROM batch")
        else:
            self.con.execute("CREATE TABLE keys AS SELECT * FROM batch")
            self.created = True
        self.con.unregister("batch")

    def duplicates(self) -> list[Problem]:
        """The second (and later) occurrences of a key, in file and row order: each names
        its file and row, and where the key first occurred."""
        if not self.created:
            return []
        key = ", ".join(_sql_name(k) for k in self.spec.key)
        rows = self.con.execute(
            f"""
            SELECT {key}, _file, _row, first_file, first_row FROM (
                SELECT *,
                    row_number() OVER w AS n,
                    first_value(_file) OVER w AS first_file,
                    first_value(_row) OVER w AS first_row
                FROM keys
                WINDOW w AS (PARTITION BY {key} ORDER BY _file, _row
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            ) WHERE n > 1 ORDER BY _file, _row LIMIT {MAX_PROBLEMS}
            """
        ).fetchall()
        width = len(self.spec.key)
        problems = []
        for row in rows:
            values, (file, at, first_file, first_row) = row[:width], row[width:]
            shown = ", ".join(repr(v) for v in values)
            first = f"{self.locations[first_file]}:{first_row}"
            problems.append(
                Problem(
                    self.locations[file],
                    at,
                    ", ".join(self.spec.key),
                    f"duplicate key {shown}: first at {first}",
                )
            )
        return problems

    def close(self) -> None:
        self.con.close()


def check_source(
    entry: ExternalTable,
    *,
    env: Mapping[str, str],
    scratch: Path | None = None,
    on_file: Callable[[str, int], None] | None = None,
) -> CheckedSource:
    """Check that `entry` may be registered; BadInput (exit 2) names what is wrong.

    1. The location exists and is the right kind: a Delta table that delta-rs opens, or a
       folder (or `s3://` prefix) holding at least one `*.parquet` file (names beginning
       with `.` or `_` are skipped, in subfolders too). `s3://` locations use the AWS
       variables of `env` (`s3_options`).
    2. No two canonical columns come from one source column, and every canonical column's
       source column (after the map) is in the source: for Delta in the table's schema,
       for Parquet in every file (the first file missing one is reported). A missing one
       names the source column and the canonical.
    3. Every data file (a Delta table's current version's; every Parquet file), its mapped
       columns renamed to canonical names, passes the importer's validation
       (`conform_arrow`, rows numbered from 1 in each file); the first file with problems
       raises them (`FILE:ROW: field: problem`, at most 20).
    4. The table's key is unique across the whole source: a second occurrence is a problem
       at its file and row, naming the first (DuckDB over the keys, spilling to `scratch`).
    5. `entities`: the rules spanning rows that an import checks (`check_entities_merge`).

    `on_file(location, rows)` is called after each file is checked.
    """
    if entry.table not in EXTERNAL_TABLES:
        raise BadInput(Problem(COMMAND_LINE, None, "TABLE", f"{entry.table!r} cannot be a source"))
    spec = table_spec(entry.table)
    same = _same_source_columns(entry)
    if same:
        raise BadInput(same)
    if entry.format == "mastodon":
        files = [_mastodon_file(entry)]
        missing = []
    elif entry.format == "delta":
        names, files = _delta_files(entry.location, env)
        missing = _missing_columns(entry.location, names, entry)
    else:
        files = _parquet_files(entry.location, env)
        # The first file missing a column says it (the others usually share its schema).
        missing = next(
            (m for f in files if (m := _missing_columns(f.location, f.names, entry))), []
        )
    if missing:
        raise BadInput(missing[:MAX_PROBLEMS])
    source_columns = [entry.source_column(c) for c in spec.column_names]
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="source-check-") as spill:
        keys = _Keys(spec, Path(spill))
        try:
            rows = 0
            checked_files: list[Conformed] = []
            for data_file in files:
                data = _renamed(data_file.read(source_columns), entry, spec)
                checked = conform_arrow(data, spec, location=data_file.location)
                if checked.problems:
                    raise BadInput(checked.problems)
                keys.add(checked)
                rows += checked.table.num_rows
                if spec.name == "entities":
                    checked_files.append(checked)
                if on_file is not None:
                    on_file(data_file.location, checked.table.num_rows)
            duplicates = keys.duplicates()
        finally:
            keys.close()
    if duplicates:
        raise BadInput(duplicates)
    if spec.name == "entities" and checked_files:
        incoming = pa.concat_tables([c.table for c in checked_files])
        check_entities_merge(None, incoming, checked_files)
    return CheckedSource(entry=entry, files=len(files), rows=rows)
