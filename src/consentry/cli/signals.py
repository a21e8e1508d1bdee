"""CLI commands: `consentry signals export` (every author's signal headers for edge
key-value stores, in full or as the difference since an earlier export)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from consentry.cli.common import (
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    settings_from,
)
from consentry.errors import BadInput, Problem
from consentry.instants import parse_instant
from consentry.ledger.export import export_signals
from consentry.ledger.sync import ledger_for
from consentry.recovery import require_store

__all__ = ["register", "signals_app"]

signals_app = typer.Typer(help="Per-author preference signals for CDNs and edge stores.")


@signals_app.command("export")
@exits_cleanly
def export_command(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only the authors whose headers changed since the export with this cursor.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the NDJSON here; default <home>/signals/exports/CURSOR.ndjson "
            "(CURSOR.since-SINCE.ndjson for a diff).",
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="RFC 3339 instant with offset, or a date (00:00Z); default now."),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url",
            help="Public base URL for tdm-policy; default CONSENTRY_PUBLIC_URL.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Every author's Content-Usage, TDMRep and X-Robots-Tag headers as NDJSON (author ->
    headers), or with --since only the changes; ends with a trailer naming the new cursor."""
    settings = settings_from(ctx)
    base = base_url or settings.public_url
    if not base:
        raise BadInput(
            Problem(
                "--base-url",
                None,
                None,
                "tdm-policy needs the platform's public URL: pass --base-url or set "
                "CONSENTRY_PUBLIC_URL",
            )
        )
    when = parse_instant(at)
    require_store(settings)
    ledger = ledger_for(settings)
    try:
        with progress() as bar:
            task = bar.add_task("exporting signals", total=None)
            result = export_signals(
                ledger,
                settings.home / "signals" / "exports",
                at=when,
                base_url=base,
                since=since,
                out=out,
                on_step=lambda s: bar.update(task, description=s),
            )
    finally:
        ledger.store.close()
    if as_json:
        print_json(asdict(result))
        return
    console.print(
        f"{plural(result.authors, 'author')} at {result.at.isoformat()} (policy "
        f"{result.policy_version}): {result.put:,} put, {result.remove:,} removed"
        + (f" since {result.since}" if result.since else ""),
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"wrote {result.out}", highlight=False, soft_wrap=True)
    console.print(f"cursor {result.cursor}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `signals` group to the root app."""
    app.add_typer(signals_app, name="signals")
