"""CLI commands: `consentry import <table> FILE...`, one sub-command per canonical table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.common import (
    console,
    exits_cleanly,
    print_json,
    progress,
    settings_from,
)
from consentry.engine import Lake
from consentry.ledger.sync import SYNCED_TABLES, sync_ledger
from consentry.settings import Settings
from consentry.sources import TABLES, ImportResult, import_files
from consentry.sources.importer import record_result
from consentry.sources.mastodon import register_cli as register_mastodon
from consentry.store import open_store

__all__ = ["import_app", "record_run", "register", "run_import"]

import_app = typer.Typer(
    name="import",
    help="Validate files and merge them into the lake's canonical tables (idempotent by key).",
    no_args_is_help=True,
)


def record_run(settings: Settings, result: ImportResult) -> int:
    """Record a finished import in the control-plane store; returns the run id."""
    with open_store(settings.resolved_database_url) as store:
        return record_result(store, result)


def run_import(settings: Settings, table: str, files: list[Path]) -> dict[str, Any]:
    """Import `files` into `table` of the home's lake, record the run, return a report.

    1. Validate every file, then merge in one atomic snapshot (`import_files`).
    2. Record the run in the store (needs `consentry init` first).
    3. For `users` and `consent_events`, bring the consent ledger up to date.
    """
    with progress() as bar:
        bar.add_task(f"importing {len(files)} file(s) into {table}", total=None)
        result = import_files(Lake(settings.lake_dir), table, files)
    run_id = record_run(settings, result)
    ledger = sync_ledger(settings, [table]) if table in SYNCED_TABLES else {}
    return {
        "run_id": run_id,
        "table": result.table,
        "origin": result.origin,
        "rows_read": result.rows_read,
        "rows_new": result.rows_new,
        "rows_replaced": result.rows_replaced,
        "rows_total": result.rows_total,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "ledger": ledger,
    }


def _add_table_command(table: str) -> None:
    spec = TABLES[table]
    key = ", ".join(spec.key)

    @import_app.command(
        table,
        help=f"Import {table}: {spec.description} Key: {key}. "
        "Formats by extension: .csv, .jsonl/.ndjson, .parquet/.pq.",
    )
    @exits_cleanly
    def command(
        ctx: typer.Context,
        files: Annotated[
            list[Path],
            typer.Argument(help="Files to import (merged in order; the last row per key wins)."),
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        report = run_import(settings_from(ctx), table, files)
        if as_json:
            print_json(report)
            return
        console.print(
            f"{report['table']}: read {report['rows_read']}, new {report['rows_new']}, "
            f"replaced {report['rows_replaced']}, total {report['rows_total']}",
            highlight=False,
            soft_wrap=True,
        )


for _table in TABLES:
    _add_table_command(_table)

# The Mastodon connector adds `consentry import mastodon` to this group.
register_mastodon(import_app)


def register(app: typer.Typer) -> None:
    """Add the `import` group to the root app."""
    app.add_typer(import_app, name="import")
