"""CLI commands: `consentry source add|list|remove`, external sources: the platform's own
copy of a canonical table read in place instead of imported (docs/sources.md)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import AuditPayload, SourceAdded, SourceRemoved
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
from consentry.engine.external import (
    DATABASE_SOURCE_TABLES,
    EXTERNAL_TABLES,
    SOURCES_FILE,
    ExternalTable,
    load_external,
    save_external,
)
from consentry.errors import BadInput, ConsentryError, Problem, did_you_mean
from consentry.settings import Settings
from consentry.sources.external import (
    COMMAND_LINE,
    check_source,
    normalise_location,
    parse_column_map,
)
from consentry.sources.mastodon import DEFAULT_REGION, mastodon_url
from consentry.store import open_store

__all__ = ["register", "source_app"]

source_app = typer.Typer(
    help="External sources: the platform's own Delta table or Parquet folder read in place "
    "instead of an imported copy.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
TableArgument = Annotated[
    str,
    typer.Argument(
        help=f"The canonical table: {', '.join(EXTERNAL_TABLES)}.",
        metavar="TABLE",
        show_default=False,
    ),
]


def _table(name: str, known: tuple[str, ...] | list[str], what: str) -> str:
    """`name` if it is one of `known`, else bad input naming the closest (exit 2)."""
    if name in known:
        return name
    hint = did_you_mean(name, known)
    message = f"{name!r} is not {what}"
    raise BadInput(Problem(COMMAND_LINE, None, "TABLE", f"{message}; {hint}" if hint else message))


@contextmanager
def _registry_lock(home: Path) -> Iterator[None]:
    """Hold the exclusive `flock` of `<home>/.sources.json.lock` for the block: registry changes
    (read, audit, write) of concurrent commands never interleave, so none is lost."""
    fd = os.open(home / f".{SOURCES_FILE}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _commit(settings: Settings, event: AuditPayload, tables: Mapping[str, ExternalTable]) -> None:
    """Append `event`, then write the registry `tables` (the caller holds the registry lock).

    The audit event and the registry file cannot share a transaction, so the order decides
    what an interruption leaves. The event's transaction commits first and the file is
    written after it: a crash or a failed write in between leaves an audit event for a change
    that did not happen (the registry is as it was; the error says so), never a registry
    change the audit log does not show. The other order (file first, or file inside the
    transaction before its commit) could leave a source registered, and read by every job,
    with no `source.added` event if the commit or the process failed after the write.
    """
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        seq = SqlAuditSink().append(session, event)
    try:
        save_external(settings.home, tables)
    except OSError as exc:
        raise ConsentryError(
            f"audit event {seq} ({event.event_type}) was recorded, but the registry "
            f"{settings.home / SOURCES_FILE} could not be written ({exc}); it is unchanged: "
            "run the command again"
        ) from exc


def _entry_json(entry: ExternalTable) -> dict[str, Any]:
    return entry.to_json()


@source_app.command("add")
@exits_cleanly
def source_add(
    ctx: typer.Context,
    table: TableArgument,
    delta: Annotated[
        str | None,
        typer.Option(
            "--delta",
            metavar="LOCATION",
            help="A Delta table: a local path or s3://bucket/prefix.",
            show_default=False,
        ),
    ] = None,
    parquet: Annotated[
        str | None,
        typer.Option(
            "--parquet",
            metavar="LOCATION",
            help="A folder (or s3:// prefix) of .parquet files; read-only.",
            show_default=False,
        ),
    ] = None,
    mastodon: Annotated[
        str | None,
        typer.Option(
            "--mastodon",
            metavar="DATABASE_URL",
            help="A Mastodon server's PostgreSQL (users or posts), read by the Mastodon "
            "connector whenever a job reads the table; the password in PGPASSWORD or "
            "~/.pgpass, not in the URL.",
            show_default=False,
        ),
    ] = None,
    default_region: Annotated[
        str | None,
        typer.Option(
            "--default-region",
            metavar="CC",
            help="With --mastodon: the region of every account (Mastodon does not keep "
            "one; default ZZ, unknown).",
            show_default=False,
        ),
    ] = None,
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            metavar="CANON=SRC,...",
            help="The source's name for a canonical column (canonical=source, comma-separated "
            "or repeated); unnamed columns keep their canonical names.",
            show_default=False,
        ),
    ] = None,
    purge: Annotated[
        bool,
        typer.Option(
            "--purge",
            help="Let retention purges delete and anonymise rows of the source itself "
            "(Delta only: a Delta commit, then a vacuum of the table).",
        ),
    ] = False,
    replace_imported: Annotated[
        bool,
        typer.Option(
            "--replace-imported",
            help="Register even though the lake holds an imported copy of TABLE (the copy "
            "is kept, but unread while the source is registered).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Register an external source for TABLE after validating every row; audited."""
    settings = settings_from(ctx)
    name = _table(
        table, EXTERNAL_TABLES, f"a table a source may stand in for ({', '.join(EXTERNAL_TABLES)})"
    )
    problems = []
    given = [o for o, v in (("delta", delta), ("parquet", parquet), ("mastodon", mastodon)) if v]
    if len(given) != 1:
        problems.append(
            Problem(COMMAND_LINE, None, "--delta/--parquet/--mastodon", "give exactly one of them")
        )
    if mastodon is not None:
        problems += _mastodon_problems(name, mastodon, column_map, purge)
    elif default_region is not None:
        problems.append(Problem(COMMAND_LINE, None, "--default-region", "only with --mastodon"))
    if purge and parquet is not None:
        problems.append(
            Problem(
                COMMAND_LINE,
                None,
                "--purge",
                "only a Delta source can be purged (a Parquet folder has no transactions: "
                "rows cannot be deleted from it atomically)",
            )
        )
    if problems:
        raise BadInput(problems)
    columns = parse_column_map(name, column_map or [])
    if mastodon is not None:
        entry = ExternalTable(
            table=name,
            format="mastodon",
            location=mastodon,
            options={"default_region": default_region or DEFAULT_REGION},
        )
    else:
        entry = ExternalTable(
            table=name,
            format="delta" if delta is not None else "parquet",
            location=normalise_location(delta if delta is not None else str(parquet)),
            columns=columns,
            purge=purge,
        )
    _refuse_registered(settings, name)
    recover_first(settings)
    imported = Lake.of(settings).exists(name)
    if imported and not replace_imported:
        raise BadInput(
            Problem(
                COMMAND_LINE,
                None,
                "TABLE",
                f"the lake already holds {name} imported by Consentry; a source would shadow "
                "that copy (it is kept, not deleted, but no job reads it while the source is "
                "registered): add --replace-imported to register anyway",
            )
        )
    with progress() as bar:
        task = bar.add_task(f"validating {name} at {entry.location}", total=None)

        def checked_file(location: str, rows: int) -> None:
            bar.update(task, description=f"validated {location} ({plural(rows, 'row')})")
            bar.advance(task)

        checked = check_source(
            entry, env=os.environ, scratch=settings.home / "tmp", on_file=checked_file
        )
    with _registry_lock(settings.home):
        registry = _refuse_registered(settings, name)
        _commit(
            settings,
            SourceAdded(
                table=name,
                format=entry.format,
                location=entry.location,
                columns=dict(sorted(entry.columns.items())),
                purge=entry.purge,
                rows=checked.rows,
                files=checked.files,
                shadows_imported=imported,
            ),
            {**registry, name: entry},
        )
    report = {
        **_entry_json(entry),
        "rows": checked.rows,
        "files": checked.files,
        "shadows_imported": imported,
    }
    if as_json:
        print_json(report)
        return
    console.print(
        f"{name}: registered the {entry.format} source {entry.location} "
        f"({plural(checked.rows, 'row')} in {plural(checked.files, 'file')})"
        + ("; the imported copy is kept, unread" if imported else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _mastodon_problems(
    name: str, url: str, column_map: list[str] | None, purge: bool
) -> list[Problem]:
    """What `--mastodon` refuses: another table than users and posts, a column map (the
    connector maps), `--purge` (the server purges its own database), a password in the URL
    (the registry is a plain file)."""
    problems = []
    if name not in DATABASE_SOURCE_TABLES:
        problems.append(
            Problem(
                COMMAND_LINE, None, "TABLE", f"a Mastodon source holds users or posts, not {name}"
            )
        )
    if column_map:
        problems.append(
            Problem(COMMAND_LINE, None, "--map", "not with --mastodon: the connector maps")
        )
    if purge:
        problems.append(
            Problem(
                COMMAND_LINE,
                None,
                "--purge",
                "not with --mastodon: the server deletes its own accounts and statuses",
            )
        )
    if mastodon_url(url).password:
        problems.append(
            Problem(
                COMMAND_LINE,
                None,
                "--mastodon",
                "no password in the URL (the registry is a plain file): give it in PGPASSWORD "
                "or ~/.pgpass",
            )
        )
    return problems


def _refuse_registered(settings: Settings, name: str) -> dict[str, ExternalTable]:
    """The registry, unless it already names `name` (bad input: remove it first)."""
    registry = load_external(settings.home)
    if name in registry:
        raise BadInput(
            Problem(
                COMMAND_LINE,
                None,
                "TABLE",
                f"{name} already has a source ({registry[name].format} at "
                f"{registry[name].location}); `consentry source remove {name}` first",
            )
        )
    return registry


@source_app.command("list")
@exits_cleanly
def source_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """The registered external sources: table, format, location, column map, purge."""
    settings = settings_from(ctx)
    registry = load_external(settings.home)
    entries = [registry[name] for name in sorted(registry)]
    if as_json:
        print_json({"sources": [_entry_json(e) for e in entries]})
        return
    if not entries:
        console.print("no external sources: every table is read from the lake", markup=False)
        return
    out = Table(title=plural(len(entries), "external source"))
    for column in ("Table", "Format", "Location", "Column map", "Purge"):
        out.add_column(column, overflow="fold")
    for e in entries:
        out.add_row(
            e.table,
            e.format,
            e.location,
            ", ".join(f"{c}={s}" for c, s in sorted(e.columns.items())) or "—",
            "yes" if e.purge else "no",
        )
    console.print(out)


@source_app.command("remove")
@exits_cleanly
def source_remove(ctx: typer.Context, table: TableArgument, as_json: JsonOption = False) -> None:
    """Unregister TABLE's external source (the source is not touched); audited."""
    settings = settings_from(ctx)
    recover_first(settings)
    with _registry_lock(settings.home):
        registry = load_external(settings.home)
        name = _table(table, sorted(registry), "a table with an external source")
        entry = registry[name]
        _commit(
            settings,
            SourceRemoved(table=name, format=entry.format, location=entry.location),
            {t: e for t, e in registry.items() if t != name},
        )
    if as_json:
        print_json({"removed": _entry_json(entry)})
        return
    console.print(
        f"{name}: unregistered the {entry.format} source {entry.location}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the `source` group to the root command."""
    app.add_typer(source_app, name="source")
