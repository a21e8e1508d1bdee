"""CLI commands: `consentry licensee add|list|show|disable` (docs/licensees.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from consentry.cli.common import console, err_console, exits_cleanly, print_json, settings_from
from consentry.delivery.licensees import LicenseeRecord, LicenseeRegistry, registry_for
from consentry.instants import parse_instant, rfc3339

__all__ = ["licensee_app", "register"]

licensee_app = typer.Typer(
    help="Licensees: who may receive deliveries, for which purpose, regions, languages and period.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
NameArgument = Annotated[str, typer.Argument(help="The licensee's name (a slug).")]


@contextmanager
def _registry(ctx: typer.Context) -> Iterator[LicenseeRegistry]:
    registry = registry_for(settings_from(ctx))
    try:
        yield registry
    finally:
        registry.store.close()


def _scope(values: tuple[str, ...], everything: str) -> str:
    return ", ".join(values) if values else everything


def _print_record(record: LicenseeRecord) -> None:
    period_from = rfc3339(record.period_from) if record.period_from else "open"
    period_to = rfc3339(record.period_to) if record.period_to else "open"
    status = "active" if record.disabled_at is None else f"disabled {rfc3339(record.disabled_at)}"
    lines = [
        ("name", record.name),
        ("id", record.id),
        ("purpose", record.purpose),
        ("regions", _scope(record.regions, "everywhere")),
        ("excluded", _scope(record.exclude_regions, "none")),
        ("languages", _scope(record.languages, "all")),
        ("minimise", _scope(record.minimise, "nothing")),
        ("period", f"[{period_from}, {period_to})"),
        ("created", rfc3339(record.created_at)),
        ("status", status),
        ("api key", f"{record.api_key_prefix}…"),
    ]
    for label, value in lines:
        console.print(f"{label:<10} {value}", highlight=False, soft_wrap=True, markup=False)


@licensee_app.command("add")
@exits_cleanly
def licensee_add(
    ctx: typer.Context,
    name: NameArgument,
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose key from the policy file.")],
    regions: Annotated[
        list[str] | None,
        typer.Option(
            "--regions",
            help="Regions in scope: ISO 3166-1 codes or EU, EEA, UK; repeat or comma-separate. "
            "Default: everywhere.",
        ),
    ] = None,
    exclude_regions: Annotated[
        list[str] | None,
        typer.Option("--exclude-regions", help="Regions taken out of scope."),
    ] = None,
    languages: Annotated[
        list[str] | None,
        typer.Option(
            "--languages", help="BCP 47 language tags in scope (en, pt-br). Default: all."
        ),
    ] = None,
    period_from: Annotated[
        str | None,
        typer.Option("--from", help="Earliest post creation instant licensed (date or RFC 3339)."),
    ] = None,
    period_to: Annotated[
        str | None,
        typer.Option("--to", help="End (exclusive) of the licensed creation period."),
    ] = None,
    minimise: Annotated[
        list[str] | None,
        typer.Option(
            "--minimise",
            help="Identifiers replaced in delivered texts: url, handle, email, card, ip, phone, "
            "all or none; repeat or comma-separate. Default: all.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a licensee; prints its API key once (it is stored only hashed)."""
    start = None if period_from is None else parse_instant(period_from, field="--from")
    end = None if period_to is None else parse_instant(period_to, field="--to")
    with _registry(ctx) as registry:
        added = registry.add(
            name,
            purpose,
            regions=regions or (),
            exclude_regions=exclude_regions or (),
            languages=languages or (),
            period_from=start,
            period_to=end,
            minimise=minimise,
        )
    if as_json:
        print_json({"licensee": added.record.as_dict(), "api_key": added.api_key})
        return
    _print_record(added.record)
    console.print(f"API key    {added.api_key}", highlight=False, soft_wrap=True, markup=False)
    err_console.print(
        "This API key is shown only now; store it safely and hand it to the licensee.",
        highlight=False,
    )


@licensee_app.command("list")
@exits_cleanly
def licensee_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every licensee, disabled ones included, by name."""
    with _registry(ctx) as registry:
        records = registry.licensees()
    if as_json:
        print_json([r.as_dict() for r in records])
        return
    if not records:
        console.print("no licensees yet (consentry licensee add NAME --purpose P)")
        return
    table = Table("name", "purpose", "regions", "languages", "period", "status")
    for r in records:
        period = (
            f"{r.period_from.date() if r.period_from else '…'}"
            f" to {r.period_to.date() if r.period_to else '…'}"
        )
        table.add_row(
            r.name,
            r.purpose,
            _scope(r.regions, "everywhere")
            + (f" except {', '.join(r.exclude_regions)}" if r.exclude_regions else ""),
            _scope(r.languages, "all"),
            period,
            "active" if r.active else "disabled",
        )
    console.print(table)


@licensee_app.command("show")
@exits_cleanly
def licensee_show(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """One licensee's terms and status."""
    with _registry(ctx) as registry:
        record = registry.get(name)
    if as_json:
        print_json(record.as_dict())
        return
    _print_record(record)


@licensee_app.command("disable")
@exits_cleanly
def licensee_disable(ctx: typer.Context, name: NameArgument, as_json: JsonOption = False) -> None:
    """Disable a licensee for good: no more deliveries, its API key stops working."""
    with _registry(ctx) as registry:
        record, changed = registry.disable(name)
    if as_json:
        print_json({"licensee": record.as_dict(), "changed": changed})
        return
    verb = "disabled" if changed else "was already disabled"
    when = rfc3339(record.disabled_at) if record.disabled_at else "an unknown instant"
    console.print(f"{record.name} {verb} at {when}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the `licensee` command group to the root app."""
    app.add_typer(licensee_app, name="licensee")
