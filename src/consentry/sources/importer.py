"""Import files or Arrow data into a canonical lake table: validate everything, then merge.

The merge is idempotent: a row's key (see `consentry.schema`) identifies it, and
re-importing a key replaces the row. Rules in docs/tables.md.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consentry.errors import BadInput, Problem
from consentry.schema import TableSpec, table_spec
from consentry.sources.entities import check_entities_merge
from consentry.sources.readers import MAX_PROBLEMS, read_file
from consentry.sources.validate import Conformed, conform, conform_arrow

if TYPE_CHECKING:
    from consentry.engine.lake import Lake
    from consentry.store import ImportLog

__all__ = [
    "PART_FILE_SIZE",
    "ROW_GROUP_ROWS",
    "ImportResult",
    "check_arrow",
    "check_files",
    "import_arrow",
    "import_files",
    "latest_per_key",
    "merge_into",
    "record_result",
    "stage_merge",
    "write_merge",
]

PART_FILE_SIZE = "128MB"
"""Target size of one Parquet part written by a merge (DuckDB rolls to a new file past it)."""

ROW_GROUP_ROWS = 122_880
"""Rows per Parquet row group; parts roll over at row-group boundaries."""


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import did.

    `rows_new` counts keys the table did not have; `rows_replaced` counts keys it had,
    whose rows were replaced by the imported version (changed or not).
    """

    table: str
    origin: str
    """The imported files joined with `, `, or the origin a connector gave."""
    rows_read: int
    """Rows in the input, before de-duplication by key."""
    rows_new: int
    rows_replaced: int
    rows_total: int
    """Rows in the table after the import."""
    started_at: datetime
    finished_at: datetime


def record_result(log: ImportLog, result: ImportResult) -> int:
    """Record a finished import in the import log; returns the run id."""
    return log.record_import(
        table=result.table,
        origin=result.origin,
        rows_read=result.rows_read,
        rows_new=result.rows_new,
        rows_total=result.rows_total,
        started_at=result.started_at,
        finished_at=result.finished_at,
    )


def _spec(table: str) -> TableSpec:
    try:
        return table_spec(table)
    except KeyError as exc:
        raise BadInput(
            Problem(location="table", row=None, field=None, message=str(exc.args[0]))
        ) from None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join(_sql_str(p) for p in paths) + "]"


def latest_per_key(incoming: pa.Table, key: Sequence[str]) -> pa.Table:
    """`incoming` sorted by `key` (nulls first) with only the last occurrence of each key.

    1. Stable sort by the key columns (Arrow): rows with equal keys stay in input order.
    2. Keep a row when the next row's key differs (null equals null): the last occurrence.
    """
    n = incoming.num_rows
    order = pc.sort_indices(incoming, sort_keys=[(k, "ascending", "at_start") for k in key])
    ranked = incoming.take(order)
    if n < 2:
        return ranked
    same: pa.Array | None = None
    for name in key:
        column = ranked[name].combine_chunks()
        before, after = column.slice(0, n - 1), column.slice(1)
        equal = pc.or_(
            pc.fill_null(pc.equal(before, after), False),
            pc.and_(pc.is_null(before), pc.is_null(after)),
        )
        same = equal if same is None else pc.and_(same, equal)
    keep = pa.concat_arrays([pc.invert(same), pa.array([True])])
    return ranked.filter(keep)


def merge_into(
    lake: Lake, spec: TableSpec, incoming: pa.Table, *, inputs: Sequence[Conformed] = ()
) -> tuple[int, int, int]:
    """Merge validated rows into `spec`'s table as one new snapshot; returns (new, replaced, total).

    The snapshot is committed at once (`Lake.writing`); on any error nothing changes. The
    merge itself follows `write_merge`.
    """
    with lake.writing(spec.name) as staging:
        fresh, replaced, total = write_merge(lake, spec, incoming, staging, inputs=inputs)
    return fresh.num_rows - replaced, replaced, total


def stage_merge(
    lake: Lake,
    spec: TableSpec,
    incoming: pa.Table,
    token: str,
    *,
    inputs: Sequence[Conformed] = (),
) -> tuple[pa.Table, int, int, int]:
    """Write the merge of `incoming` into `spec`'s table as a snapshot staged under `token`
    (`Lake.stage`), not yet live; returns (the de-duplicated rows, new, replaced, total).

    The caller holds the table's job lock and later publishes or discards the snapshot
    (two-phase import, docs/invariants.md).
    """
    staged = lake.stage(spec.name, token)
    fresh, replaced, total = write_merge(lake, spec, incoming, staged, inputs=inputs)
    return fresh, fresh.num_rows - replaced, replaced, total


def write_merge(
    lake: Lake,
    spec: TableSpec,
    incoming: pa.Table,
    target: Path,
    *,
    inputs: Sequence[Conformed] = (),
) -> tuple[pa.Table, int, int]:
    """Write the live snapshot merged with `incoming` into the directory `target`; returns
    (the de-duplicated incoming rows, rows replaced, rows in total).

    1. Within the import the last occurrence of a key wins (`latest_per_key`, in Arrow).
    2. For `entities`, the rules spanning rows are checked on the merged table before
       anything is written (`check_entities_merge`; `inputs`, which `incoming` concatenates,
       locate the imported rows in problems). The caller holds the table's writer.
    3. The existing snapshot is streamed by DuckDB from its Parquet parts (never loaded
       whole into Python); its rows whose key was imported are dropped (anti-join, null key
       parts compare equal) and the imported rows added.
    4. Output is sorted by key (nulls first) and written by DuckDB as zstd Parquet parts of
       about `PART_FILE_SIZE`, renamed `part-000000.parquet`, … in key order. DuckDB spills
       to the target dir when the sort exceeds memory.
    """
    cols = ", ".join(_quote(c) for c in spec.column_names)
    order = ", ".join(f"{_quote(k)} NULLS FIRST" for k in spec.key)
    same_key = " AND ".join(f"f.{_quote(k)} IS NOT DISTINCT FROM o.{_quote(k)}" for k in spec.key)
    fresh = latest_per_key(incoming, spec.key)
    existing = lake.files(spec.name)
    if spec.name == "entities":
        check_entities_merge(lake.read_files(existing) if existing else None, incoming, inputs)
    spill = target / ".spill"
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET preserve_insertion_order = true")
        con.execute(f"SET temp_directory = {_sql_str(spill)}")
        con.register("fresh", fresh)
        if existing:
            con.execute(
                f"CREATE VIEW old AS SELECT * FROM {lake.relation(con, existing, 'old_parts')}"
            )
            row = con.execute(
                f"SELECT count(*) FROM fresh f SEMI JOIN old o ON {same_key}"
            ).fetchone()
            rows_replaced = int(row[0]) if row else 0
            query = f"""
                SELECT {cols} FROM (
                    SELECT {cols} FROM old o ANTI JOIN fresh f ON {same_key}
                    UNION ALL
                    SELECT {cols} FROM fresh
                ) ORDER BY {order}
            """
        else:
            rows_replaced = 0
            # Already sorted and unique; insertion order is preserved by the writer.
            query = f"SELECT {cols} FROM fresh"
        con.execute(
            f"""
            COPY ({query}) TO {_sql_str(target)} (
                FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {ROW_GROUP_ROWS},
                FILE_SIZE_BYTES '{PART_FILE_SIZE}',
                FILENAME_PATTERN 'part-{{i}}', OVERWRITE_OR_IGNORE true
            )
            """
        )
    finally:
        con.close()
    shutil.rmtree(spill, ignore_errors=True)
    # DuckDB numbers parts part-0, part-1, …; zero-padding keeps name order = key order.
    parts = sorted(target.glob("part-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    for index, part in enumerate(parts):
        part.rename(target / f"part-{index:06d}.parquet")
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in target.glob("part-*.parquet"))
    return fresh, rows_replaced, total


def validated(checked: Sequence[Conformed], spec: TableSpec) -> pa.Table:
    """The rows of every validated input as one table; BadInput (at most 20 problems) when
    any input has a problem."""
    problems = [p for c in checked for p in c.problems]
    if problems:
        raise BadInput(problems[:MAX_PROBLEMS])
    tables = [c.table for c in checked]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def check_files(table: str, files: Sequence[Path]) -> tuple[TableSpec, pa.Table, list[Conformed]]:
    """Read and validate `files` for `table` (nothing is written); (spec, their rows, each
    file's validated input, which locates rows in later problems)."""
    spec = _spec(table)
    if not files:
        raise BadInput(Problem(location=table, row=None, field=None, message="no files given"))
    checked: list[Conformed] = []
    for path in map(Path, files):
        try:
            raw = read_file(path, spec)
        except BadInput as exc:
            checked.append(Conformed(pa.table({}), exc.problems, len(exc.problems)))
            continue
        checked.append(conform(raw, spec))
    return spec, validated(checked, spec), checked


def check_arrow(
    table: str, data: pa.Table, *, origin: str
) -> tuple[TableSpec, pa.Table, list[Conformed]]:
    """Validate in-memory rows for `table` (problems located at `origin`, row = index + 1)."""
    spec = _spec(table)
    checked = [conform_arrow(data, spec, location=origin)]
    return spec, validated(checked, spec), checked


def _merged(
    lake: Lake,
    spec: TableSpec,
    incoming: pa.Table,
    inputs: Sequence[Conformed],
    origin: str,
    started: datetime,
) -> ImportResult:
    rows_new, rows_replaced, total = merge_into(lake, spec, incoming, inputs=inputs)
    return ImportResult(
        table=spec.name,
        origin=origin,
        rows_read=incoming.num_rows,
        rows_new=rows_new,
        rows_replaced=rows_replaced,
        rows_total=total,
        started_at=started,
        finished_at=datetime.now(UTC),
    )


def import_files(lake: Lake, table: str, files: Sequence[Path]) -> ImportResult:
    """Validate `files` and merge them into `table` in one atomic snapshot (lake only: a
    home's imports go through `consentry.intake`, which commits the control plane with it).

    1. The format comes from each file's extension (.parquet/.pq, .csv, .jsonl/.ndjson).
    2. Every file is read and validated before anything is written; any problem in any file
       raises `BadInput` (at most 20 problems, `FILE:ROW: field: message`) and the lake is
       left exactly as it was.
    3. Files are merged in the order given: for a key present in several, the last wins.
    """
    started = datetime.now(UTC)
    spec, incoming, inputs = check_files(table, files)
    return _merged(lake, spec, incoming, inputs, ", ".join(str(f) for f in files), started)


def import_arrow(lake: Lake, table: str, data: pa.Table, *, origin: str) -> ImportResult:
    """Validate in-memory Arrow rows (from a connector or the demo generator) and merge them.

    Same rules as `import_files`; problems are located at `origin` with row = index + 1.
    """
    started = datetime.now(UTC)
    spec, incoming, inputs = check_arrow(table, data, origin=origin)
    return _merged(lake, spec, incoming, inputs, origin, started)
