"""CLI commands: `consentry lake history|optimize|vacuum`, the lake's Delta tables'
versions and their upkeep (docs/engines.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from consentry.cli.common import (
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.engine import Lake
from consentry.engine.lake import _TABLE_NAME
from consentry.errors import BadInput, Problem, did_you_mean
from consentry.lake_vacuum import vacuum_lake
from consentry.retention import finish_awaiting_purges

__all__ = ["DEFAULT_GRACE_HOURS", "lake_app", "register"]

lake_app = typer.Typer(
    help="The lake's Delta tables: their versions (time travel), compaction and vacuum.",
    no_args_is_help=True,
)

DEFAULT_GRACE_HOURS = 168
"""`lake vacuum --grace-hours` unless given: Delta Lake's own default retention (7 days), so
a reader still reading a version superseded moments ago keeps its files."""

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
TablesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Lake tables (default: every table in the lake).",
        metavar="[TABLE]...",
        show_default=False,
    ),
]


def _known_tables(lake: Lake, names: list[str], *, maintained: bool = False) -> list[str]:
    """`names` (every table of the lake when empty), each checked: a name that is not a
    table name, or no table of the lake, is bad input naming it (exit 2). With
    `maintained`, "every table" leaves out external sources the platform maintains (all
    but Delta sources registered with `--purge`)."""
    tables = lake.tables()
    if not names:
        if maintained:
            return [t for t in tables if t not in lake.external or lake.external[t].purge]
        return tables
    problems = []
    for name in dict.fromkeys(names):
        if not _valid_name(name):
            problems.append(
                Problem(
                    "command line",
                    None,
                    "TABLE",
                    f"bad table name {name!r}: use lowercase letters, digits and underscores",
                )
            )
        elif name not in tables:
            hint = did_you_mean(name, tables)
            message = f"no table {name!r} in the lake at {lake.uri}"
            problems.append(
                Problem("command line", None, "TABLE", f"{message}; {hint}" if hint else message)
            )
    if problems:
        raise BadInput(problems)
    return list(dict.fromkeys(names))


def _valid_name(name: str) -> bool:
    """The lake's rule for table names (`Lake` refuses any other)."""
    return _TABLE_NAME.match(name) is not None


def _instant(ms: int) -> str:
    """A commit's timestamp (milliseconds since the epoch, as Delta records it) in RFC 3339
    UTC, to the millisecond."""
    at = datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=ms % 1000 * 1000)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@lake_app.command("history")
@exits_cleanly
def lake_history(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="A lake table.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Every version of a table, newest first, and whether it is still readable."""
    settings = settings_from(ctx)
    lake = Lake.of(settings)
    (name,) = _known_tables(lake, [table])
    versions = lake.history(name)
    if as_json:
        print_json(
            {
                "table": name,
                "versions": [
                    {
                        "version": v.version,
                        "committed_at": _instant(v.committed_at_ms),
                        "operation": v.operation,
                        "token": v.token,
                        "readable": v.readable,
                    }
                    for v in versions
                ],
            }
        )
        return
    out = Table(title=f"{name}: {plural(len(versions), 'version')}")
    out.add_column("Version", justify="right")
    out.add_column("Committed at", no_wrap=True)
    out.add_column("Operation")
    out.add_column("Publish token", overflow="fold")
    out.add_column("Readable", no_wrap=True)
    for v in versions:
        out.add_row(
            str(v.version),
            _instant(v.committed_at_ms),
            v.operation,
            v.token or "—",
            "yes" if v.readable else "[red]no[/red]",
        )
    console.print(out)


@lake_app.command("optimize")
@exits_cleanly
def lake_optimize(
    ctx: typer.Context,
    tables: TablesArgument = None,
    as_json: JsonOption = False,
) -> None:
    """Compact each table's small files into larger ones: one commit, the same rows."""
    settings = settings_from(ctx)
    recover_first(settings, store_required=False)
    lake = Lake.of(settings)
    names = _known_tables(lake, tables or [], maintained=True)
    results: list[dict[str, Any]] = []
    with progress() as bar:
        task = bar.add_task("optimizing", total=len(names))
        for name in names:
            bar.update(task, description=f"optimizing {name}")
            results.append(lake.optimize(name))
            bar.advance(task)
    if as_json:
        print_json({"tables": results})
        return
    if not results:
        console.print("the lake has no tables", markup=False)
        return
    out = Table(title="Optimized")
    for column in ("Table", "Files removed", "Files added", "Version"):
        out.add_column(column, justify="left" if column == "Table" else "right")
    for r in results:
        out.add_row(
            r["table"], f"{r['files_removed']:,}", f"{r['files_added']:,}", str(r["version"])
        )
    console.print(out)


@lake_app.command("vacuum")
@exits_cleanly
def lake_vacuum(
    ctx: typer.Context,
    tables: TablesArgument = None,
    grace_hours: Annotated[
        int,
        typer.Option(
            "--grace-hours",
            min=0,
            help="Keep files that a commit superseded less than this many hours ago.",
        ),
    ] = DEFAULT_GRACE_HOURS,
    as_json: JsonOption = False,
) -> None:
    """Delete the files only superseded versions list (they become unreadable); audited."""
    settings = settings_from(ctx)
    recover_first(settings)
    names = _known_tables(Lake.of(settings), tables or [], maintained=True)
    with progress() as bar:
        bar.add_task(f"vacuuming {plural(len(names), 'table')}", total=None)
        results = vacuum_lake(settings, names, grace_hours=grace_hours)
    # Purges a grace period kept from being verified are finished once their old versions
    # are gone (docs/retention.md).
    purges = finish_awaiting_purges(settings)
    if as_json:
        print_json(
            {
                "grace_hours": grace_hours,
                "tables": [r.to_json() for r in results],
                "purges": purges,
            }
        )
        return
    for purge in purges:
        console.print(f"purge {purge['purge_id']}: {purge['state']}", markup=False)
    if not results:
        console.print("the lake has no tables", markup=False)
        return
    out = Table(title=f"Vacuumed (grace {plural(grace_hours, 'hour')})")
    for column in ("Table", "Files removed", "Versions removed"):
        out.add_column(column, justify="right" if column == "Files removed" else "left")
    for r in results:
        out.add_row(
            r.table,
            f"{len(r.files_removed):,}",
            _versions(r.versions_removed) or "—",
        )
    console.print(out)


def _versions(versions: tuple[int, ...]) -> str:
    """`0-3, 5`: versions as ascending runs."""
    runs: list[list[int]] = []
    for v in versions:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def register(app: typer.Typer) -> None:
    """Add the `lake` group to the root command."""
    app.add_typer(lake_app, name="lake")
