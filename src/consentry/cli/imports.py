"""CLI commands: `consentry import <table> FILE...`, one sub-command per canonical table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.common import (
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.intake import check_import, commit_import, import_table
from consentry.settings import Settings
from consentry.sources import TABLES
from consentry.sources.mastodon import DEFAULT_REGION, mastodon_url, read_mastodon

__all__ = ["import_app", "register", "run_import"]

import_app = typer.Typer(
    name="import",
    help="Validate files and merge them into the lake's canonical tables (idempotent by key).",
    no_args_is_help=True,
)


def run_import(settings: Settings, table: str, files: list[Path]) -> dict[str, Any]:
    """Import `files` into `table` of the home (`consentry.intake.import_table`: the lake
    and the control plane together, or nothing); return the report."""
    with progress() as bar:
        task = bar.add_task(f"validating {plural(len(files), 'file')} for {table}", total=None)
        checked = check_import(table, files=files)
        recover_first(settings)
        report = commit_import(
            settings, checked, on_step=lambda step: bar.update(task, description=step)
        )
    return report.to_json()


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
            f"{report['table']}: read {report['rows_read']:,}, new {report['rows_new']:,}, "
            f"replaced {report['rows_replaced']:,}, total {report['rows_total']:,}",
            highlight=False,
            soft_wrap=True,
        )


for _table in TABLES:
    _add_table_command(_table)


@import_app.command("mastodon")
@exits_cleanly
def mastodon_command(
    ctx: typer.Context,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            metavar="URL",
            help="The Mastodon server's PostgreSQL database (postgresql://USER@HOST/DB).",
        ),
    ],
    default_region: Annotated[
        str,
        typer.Option(
            "--default-region",
            metavar="CC",
            help="ISO 3166-1 alpha-2 region given to every account (Mastodon has none).",
        ),
    ] = DEFAULT_REGION,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import local accounts and their statuses (no reblogs) from a Mastodon database."""
    settings = settings_from(ctx)
    recover_first(settings)
    with progress() as bar:
        tasks = {
            name: bar.add_task(f"reading Mastodon {name}", total=None)
            for name in ("users", "posts")
        }

        def advance(table: str, rows: int) -> None:
            bar.advance(tasks[table], rows)

        tables = read_mastodon(database_url, default_region=default_region, on_rows=advance)
    origin = "mastodon:" + mastodon_url(database_url).render_as_string(hide_password=True)
    # Accounts first: their posts' authors are then known, and they become ledger subjects.
    report = {
        name: import_table(settings, name, data=tables[name], origin=origin).to_json()
        for name in ("users", "posts")
    }
    if as_json:
        print_json(report)
        return
    for run in report.values():
        console.print(
            f"{run['table']}: read {run['rows_read']:,}, new {run['rows_new']:,}, "
            f"replaced {run['rows_replaced']:,}, total {run['rows_total']:,}",
            highlight=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    """Add the `import` group to the root app."""
    app.add_typer(import_app, name="import")
