"""Load a generated demo into the lake through the ordinary importer, logging each import."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from consentry.demo.facts import TABLE_ORDER
from consentry.errors import BadInput, Problem
from consentry.intake import import_table
from consentry.settings import Settings
from consentry.sources.importer import ImportResult

__all__ = ["LoadedTable", "demo_files", "load"]


@dataclass(frozen=True, slots=True)
class LoadedTable:
    """One table's import: the importer's result and the id of its import-log entry."""

    run_id: int
    result: ImportResult

    def to_json(self) -> dict[str, Any]:
        r = self.result
        fields: dict[str, int | str | datetime] = {
            "run_id": self.run_id,
            "table": r.table,
            "origin": r.origin,
            "rows_read": r.rows_read,
            "rows_new": r.rows_new,
            "rows_replaced": r.rows_replaced,
            "rows_total": r.rows_total,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
        }
        return fields


def demo_files(source: Path) -> dict[str, Path]:
    """The five Parquet files of a generated demo; BadInput names every one missing."""
    files = {table: source / f"{table}.parquet" for table in TABLE_ORDER}
    missing = [
        Problem(location=str(path), row=None, field=None, message="missing demo file")
        for path in files.values()
        if not path.is_file()
    ]
    if missing:
        raise BadInput(missing)
    return files


def load(
    settings: Settings,
    source: Path,
    *,
    on_table: Callable[[str], None] | None = None,
) -> list[LoadedTable]:
    """Import a generated demo's five tables into the home and record each import.

    1. All five files must exist before anything is imported.
    2. Import in TABLE_ORDER (users, posts, consent_events, entities, access_events) with
       `consentry.intake.import_table`: each table is validated, merged and committed with
       its import-log entry (and, for users and consent events, the ledger) atomically, so
       re-loading the same demo replaces rows by key and adds none.
    """
    files = demo_files(source)
    loaded: list[LoadedTable] = []
    for table in TABLE_ORDER:
        if on_table is not None:
            on_table(table)
        report = import_table(settings, table, files=[files[table]])
        loaded.append(LoadedTable(report.run_id, report.result))
    return loaded
