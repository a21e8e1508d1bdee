"""Convert a lake written by the snapshot scheme of earlier Consentry versions to Delta Lake.

The old layout, per table::

    <table>/CURRENT                     text: the name of the live snapshot folder
    <table>/v-000007[-<token>]/part-*.parquet
    <table>/.staging-<hex>/             an unfinished write (never live)
    <table>/.staged-<token>/            a job's snapshot waiting for its publish

`consentry init` runs `convert_lake` on the home's lake (docs/engines.md, "Upgrading").
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consentry.engine.lake_storage import DELTA_LOG, PUBLISH_APP
from consentry.faults import failpoint

__all__ = ["ConvertedTable", "convert_lake", "unconverted_tables"]

_POINTER = "CURRENT"
_SNAPSHOT = re.compile(r"^v-(\d{6,})(?:-([0-9a-f]{8,64}))?$")


@dataclass(frozen=True, slots=True)
class ConvertedTable:
    """One table `convert_lake` turned into a Delta table."""

    table: str
    snapshot: str
    files: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "snapshot": self.snapshot,
            "files": self.files,
            "rows": self.rows,
        }


def _committed(table_dir: Path) -> bool:
    log = table_dir / DELTA_LOG
    return log.is_dir() and any(log.glob("*.json"))


def unconverted_tables(root: Path) -> list[Path]:
    """Table folders under `root` still in the snapshot layout (a CURRENT pointer, no Delta
    commit), sorted."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / _POINTER).is_file() and not _committed(p))


def _live_snapshot(table_dir: Path) -> Path:
    """The snapshot the old lake would read, or publish on recovery.

    1. CURRENT names the live snapshot.
    2. A published snapshot numbered above it (`v-NNNNNN-<token>`) is one a crash caught
       between its rename and CURRENT's replacement; the old `publish` would have pointed
       CURRENT at it on recovery, so it is the live one.
    """
    live = table_dir / (table_dir / _POINTER).read_text(encoding="utf-8").strip()
    number = int(m.group(1)) if (m := _SNAPSHOT.match(live.name)) else -1
    for path in table_dir.iterdir():
        match = _SNAPSHOT.match(path.name)
        if match and match.group(2) and int(match.group(1)) > number and path.is_dir():
            live, number = path, int(match.group(1))
    if not live.is_dir():
        raise FileNotFoundError(f"{table_dir}: CURRENT names {live.name}, which is missing")
    return live


def convert_lake(root: Path) -> list[ConvertedTable]:
    """Convert every snapshot-layout table under `root` in place; returns what was converted.

    1. The live snapshot's parts become version 0 of a Delta table, where they lie (no data
       is copied): one commit adding each part with its row count; a snapshot published
       under a job's token records that token's publish transaction, so the job's recovery
       finds it published.
    2. That commit is the conversion's commit point: a crash before it leaves the old
       layout whole (converted again next time), a crash after it leaves only clean-up.
    3. Then CURRENT, unfinished `.staging-*` folders and superseded snapshots are removed.
       `.staged-<token>` folders stay: the Delta lake stages under the same name, so a job
       interrupted before its publish is finished or undone by its recovery as before.
    4. A table with both a Delta commit and a CURRENT pointer (a crash during clean-up) is
       only cleaned up.

    The failpoint `lake.converted` of the fault tests lies between a table's commit and its
    clean-up.
    """
    import json

    import pyarrow.parquet as pq
    from deltalake import Schema
    from deltalake.transaction import (
        AddAction,
        CommitProperties,
        Transaction,
        create_table_with_add_actions,
    )

    from consentry.engine.lake import TABLE_CONFIGURATION, _canonical_schema, _parts

    converted: list[ConvertedTable] = []
    if not root.is_dir():
        return converted
    for table_dir in sorted(p for p in root.iterdir() if (p / _POINTER).is_file()):
        if not _committed(table_dir):
            live = _live_snapshot(table_dir)
            parts = _parts(live)
            if not parts:
                raise FileNotFoundError(f"{live}: a snapshot without part files")
            mtime_ms = int(live.stat().st_mtime * 1000)
            counts = [pq.ParquetFile(part).metadata.num_rows for part in parts]
            adds = [
                AddAction(
                    path=f"{live.name}/{part.name}",
                    size=part.stat().st_size,
                    partition_values={},
                    modification_time=mtime_ms,
                    data_change=True,
                    stats=json.dumps({"numRecords": rows}),
                )
                for part, rows in zip(parts, counts, strict=True)
            ]
            schema = _canonical_schema(table_dir.name) or pq.read_schema(parts[0])
            match = _SNAPSHOT.match(live.name)
            token = match.group(2) if match else None
            transactions = [Transaction(f"{PUBLISH_APP}{token}", 1)] if token else []
            create_table_with_add_actions(
                str(table_dir),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                configuration=TABLE_CONFIGURATION,
                commit_properties=CommitProperties(app_transactions=transactions),
            )
            converted.append(ConvertedTable(table_dir.name, live.name, len(parts), sum(counts)))
            failpoint("lake.converted")
        _clean_up(table_dir)
    return converted


def _clean_up(table_dir: Path) -> None:
    """Remove what the old layout leaves besides the converted snapshot and staged ones."""
    live = _live_snapshot(table_dir)
    for path in table_dir.iterdir():
        if path.name.startswith(".staging-") or (_SNAPSHOT.match(path.name) and path != live):
            shutil.rmtree(path, ignore_errors=True)
    (table_dir / _POINTER).unlink()
