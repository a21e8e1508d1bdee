"""CLI commands: `consentry doctor` (check every invariant) and `consentry recover`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from consentry.cli.common import (
    console,
    err_console,
    exits_cleanly,
    print_json,
    progress,
    settings_from,
)
from consentry.doctor import INVARIANTS, run_doctor
from consentry.errors import EXIT_FAILURE
from consentry.recovery import recover, require_store

__all__ = ["register"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@exits_cleanly
def doctor_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check every invariant of this home (docs/invariants.md); exit 1 naming the first
    violation. Writes nothing."""
    settings = settings_from(ctx)
    require_store(settings)
    with progress() as bar:
        task = bar.add_task("checking", total=len(INVARIANTS))

        def checking(name: str) -> None:
            bar.update(task, description=name[:60], advance=1)

        report = run_doctor(settings, on_check=checking)
    if as_json:
        print_json(report.to_json())
    else:
        table = Table("invariant", "checked", "violations", "first violation")
        for check in report.checks:
            table.add_row(
                check.invariant,
                f"{check.checked:,}",
                "ok" if check.ok else f"[red]{check.count:,}[/red]",
                check.violations[0] if check.violations else "",
            )
        console.print(table)
        if report.ok:
            console.print("every invariant holds", highlight=False)
    if not report.ok:
        if not as_json:
            err_console.print(
                f"[red]violation:[/red] {report.first_violation}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(EXIT_FAILURE)


@exits_cleanly
def recover_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Roll back or forward every job whose process died (every job-starting command does
    this first); jobs still running are left alone."""
    settings = settings_from(ctx)
    recovered = recover(settings)
    rows = [
        {"job_id": j.id, "kind": j.kind, "subject": j.subject, "state": j.state, "step": j.step}
        for j in recovered
    ]
    if as_json:
        print_json({"recovered": rows})
        return
    for row in rows:
        action = "rolled forward" if row["state"] == "committed" else "rolled back"
        console.print(
            f"{row['kind']} job {row['job_id']} ({row['subject']}): {action} from {row['step']}",
            highlight=False,
            soft_wrap=True,
        )
    if not rows:
        console.print("nothing to recover", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `doctor` and `recover` to the root app."""
    app.command("doctor")(doctor_command)
    app.command("recover")(recover_command)
