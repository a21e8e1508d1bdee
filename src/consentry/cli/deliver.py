"""CLI commands: `consentry deliver`, `consentry explain`, `consentry verify-delivery`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consentry.cli.common import (
    EngineOption,
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.delivery.keyset import KeySet
from consentry.delivery.service import deliver, explain, verify_delivery
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.instants import parse_instant

__all__ = ["register"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
AsOfOption = Annotated[
    str | None,
    typer.Option("--as-of", help="Cut-off: RFC 3339 instant with offset, or a date; default now."),
]


@exits_cleanly
def deliver_command(
    ctx: typer.Context,
    licensee: Annotated[str, typer.Argument(help="The licensee's name.")],
    as_of: AsOfOption = None,
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a signed, consent-filtered delivery for LICENSEE at --as-of."""
    settings = settings_from(ctx)
    when = parse_instant(as_of, field="--as-of")
    recover_first(settings)
    with progress() as bar:
        task = bar.add_task("delivering", total=None)
        manifest = deliver(
            settings,
            licensee,
            as_of=when,
            engine=engine,
            on_progress=lambda step: bar.update(task, description=step),
        )
    if as_json:
        print_json(manifest)
        return
    counts = manifest["counts"]
    console.print(
        f"delivery {manifest['delivery_id']} for {manifest['licensee']} "
        f"({manifest['purpose']}, policy {manifest['policy_version']}, as of "
        f"{manifest['as_of']}): {counts['delivered']:,} of "
        f"{plural(counts['considered'], 'post')}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("excluded because", "posts")
    for reason, n in counts["excluded"].items():
        if n:
            table.add_row(reason, f"{n:,}")
    console.print(table)
    console.print(f"written to {settings.home / 'deliveries' / manifest['delivery_id']}")


@exits_cleanly
def explain_command(
    ctx: typer.Context,
    post_id: Annotated[str, typer.Argument(help="The post to explain.")],
    licensee: Annotated[str, typer.Option("--licensee", help="The licensee's name.")],
    as_of: AsOfOption = None,
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Why POST_ID would or would not go to --licensee at --as-of (same rules as deliver)."""
    settings = settings_from(ctx)
    report = explain(
        settings, post_id, licensee, as_of=parse_instant(as_of, field="--as-of"), engine=engine
    )
    if as_json:
        print_json(report)
        return
    verdict = "eligible" if report["eligible"] else "not eligible: " + ", ".join(report["reasons"])
    consent = report["consent"]
    console.print(
        f"post {post_id} for {licensee} at {report['as_of']}: {verdict}\n"
        f"consent: {consent['decision']} ({consent['rule']}, policy {consent['policy_version']}, "
        f"since {consent['since']})",
        highlight=False,
        soft_wrap=True,
    )


@exits_cleanly
def verify_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="A delivery directory.")],
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            help="Published keys (consentry-keys.json); default: this home's key set.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a delivery's Ed25519 signature and every file's sha256 and row count."""
    # A licensee checks with the published keys and has no home; only the default (this
    # home's key set) needs one.
    settings = settings_from(ctx, home=keys is None)
    if keys is not None:
        try:
            document = json.loads(keys.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInput(Problem(str(keys), None, None, f"cannot read keys: {exc}")) from None
    else:
        document = KeySet.for_home(settings.home).jwks()
    report = verify_delivery(directory, document)
    if as_json:
        print_json(
            {
                "directory": report.directory,
                "ok": report.ok,
                "signature_ok": report.signature_ok,
                "files_ok": report.files_ok,
                "problems": report.problems,
            }
        )
    else:
        for problem in report.problems:
            console.print(f"[red]bad:[/red] {problem}", highlight=False, soft_wrap=True)
        if report.ok:
            console.print(f"ok: {directory} — signature and every file check out")
    if not report.ok:
        if as_json:
            raise typer.Exit(1)
        raise ConsentryError(f"{directory} does not verify")


def register(app: typer.Typer) -> None:
    """Add `deliver`, `explain` and `verify-delivery` to the root app."""
    app.command("deliver")(deliver_command)
    app.command("explain")(explain_command)
    app.command("verify-delivery")(verify_command)
