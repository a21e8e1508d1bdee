"""`consentry revocations LICENSEE` and `consentry revocations overdue`.

The group resolves its first word: a sub-command name (`list`, `overdue`) runs that
command, anything else is a licensee name and runs `list` for it. So
`consentry revocations acme-ai --json` is `consentry revocations list acme-ai --json`;
a licensee literally named `overdue` or `list` is reached with `revocations list NAME`.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

from consentry.cli.common import (
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.instants import parse_instant
from consentry.observe.alerts import push_alert
from consentry.revocation import overdue_revocations, run_revocations
from consentry.settings import Settings

__all__ = ["LicenseeOrCommandGroup", "register", "revocations_app"]

TEXT_ROWS = 50
"""Rows the text output shows before pointing at --json."""


class LicenseeOrCommandGroup(TyperGroup):
    """A group whose unknown first word is a licensee name for its `list` command."""

    # Typed loosely: typer vendors its own click, whose classes these are.
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["list", *args]
        return super().resolve_command(ctx, args)


revocations_app = typer.Typer(
    cls=LicenseeOrCommandGroup,
    help="Revoked records: run the revocation job for a licensee (`revocations LICENSEE`), "
    "or list revocations past their deadline (`revocations overdue`).",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@revocations_app.command("list")
@exits_cleanly
def list_command(
    ctx: typer.Context,
    licensee: Annotated[str, typer.Argument(help="The licensee's name.")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="Evaluate at this RFC 3339 instant or date; default now."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run the revocation job for LICENSEE at --at and list every delivered record that is
    no longer eligible (new ones are added to the revocation log)."""
    settings = settings_from(ctx)
    when = parse_instant(at, field="--at")
    recover_first(settings)
    with progress() as bar:
        task = bar.add_task("revoking", total=None)
        report = run_revocations(
            settings,
            licensee,
            at=when,
            on_progress=lambda step: bar.update(task, description=step),
        )
    result = report.as_dict()
    if as_json:
        print_json(result)
        return
    console.print(
        f"{report.licensee} at {result['as_of']}: {plural(result['revoked'], 'revoked record')} "
        f"({report.new:,} new) in {plural(report.lineage_rows, 'lineage row')} of "
        f"{plural(report.deliveries, 'delivery', 'deliveries')}; run {report.run_id}",
        highlight=False,
        soft_wrap=True,
    )
    _print_rows(result["revocations"])


def _print_rows(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    table = Table("record_id", "reason", "since", "deliveries", "status", "new")
    for row in rows[:TEXT_ROWS]:
        table.add_row(
            row["record_id"][:16] + "…",
            row["reason"],
            row["since"],
            str(len(row["delivery_ids"])),
            row["status"],
            "yes" if row["new"] else "",
        )
    console.print(table)
    if len(rows) > TEXT_ROWS:
        console.print(f"… and {len(rows) - TEXT_ROWS:,} more (use --json for all)")


@revocations_app.command("overdue")
@exits_cleanly
def overdue_command(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List revocations with no receipt past the policy's revocation_sla, per licensee;
    push a `revocations.overdue` alert when some became overdue since the last one."""
    settings = settings_from(ctx)
    report = overdue_revocations(settings)
    _alert_new_overdue(settings, report)
    if as_json:
        print_json(report)
        return
    if not report["overdue"]:
        console.print(f"no overdue revocations at {report['at']}")
        return
    table = Table("licensee", "overdue", "oldest due")
    for entry in report["licensees"]:
        table.add_row(entry["licensee"], f"{entry['overdue']:,}", entry["oldest_due_at"])
    console.print(f"{plural(report['overdue'], 'overdue revocation')} at {report['at']}")
    console.print(table)


def _alert_new_overdue(settings: Settings, report: dict[str, Any]) -> None:
    """Push `revocations.overdue` for the licensees with revocations that became overdue
    since the last alert: more of them than then, or a later one (by revocation number).
    What was alerted is kept in `<home>/alerts/overdue.json` (written atomically), so a
    scheduled run alerts once per change, not once per run."""
    state_path = settings.home / "alerts" / "overdue.json"
    try:
        alerted: dict[str, Any] = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        alerted = {}
    now: dict[str, Any] = {}
    grown = []
    for entry in report["licensees"]:
        latest = max(int(r["revocation_id"].removeprefix("rv-")) for r in entry["revocations"])
        now[entry["licensee"]] = {"overdue": entry["overdue"], "latest": latest}
        before = alerted.get(entry["licensee"], {"overdue": 0, "latest": 0})
        if entry["overdue"] > before["overdue"] or latest > before["latest"]:
            grown.append(
                {
                    "licensee": entry["licensee"],
                    "overdue": entry["overdue"],
                    "oldest_due_at": entry["oldest_due_at"],
                }
            )
    if grown:
        push_alert(settings, "revocations.overdue", {"at": report["at"], "licensees": grown})
    if now != alerted:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = state_path.with_name(f".{state_path.name}.tmp")
        tmp.write_text(json.dumps(now, sort_keys=True), encoding="utf-8")
        os.replace(tmp, state_path)


def register(app: typer.Typer) -> None:
    """Add the `revocations` group to the root command."""
    app.add_typer(revocations_app, name="revocations")
