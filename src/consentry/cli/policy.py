"""CLI commands: `consentry policy validate | show | diff` (policy as code)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from consentry.cli.common import console, exits_cleanly, print_json, settings_from
from consentry.errors import BadInput, ConsentryError
from consentry.instants import parse_instant
from consentry.policy import (
    PolicyFile,
    PolicyVersion,
    describe_purpose,
    describe_retention,
    describe_scraping,
    diff_versions,
    load_policy,
)
from consentry.policy.model import RETENTION_CATEGORIES

__all__ = ["policy_app", "register"]

policy_app = typer.Typer(
    name="policy",
    help="Check, show and compare the policy file (purposes, retention, scraping, SLA).",
    no_args_is_help=True,
)


JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="Policy file to read (default: the configured policy file).",
        show_default="CONSENTRY_POLICY_FILE or the shipped x-2024.yaml",
    ),
]


def _policy(ctx: typer.Context, file: Path | None) -> PolicyFile:
    # The policy file is a setting, not part of a home: these commands need none.
    return load_policy(file if file is not None else settings_from(ctx, home=False).policy_file)


def _version_summary(v: PolicyVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "effective_from": v.effective_from,
        "purposes": [p.key for p in v.purposes],
        "retention_gaps": v.retention_gaps(),
    }


@policy_app.command("validate")
@exits_cleanly
def validate(
    file: Annotated[Path, typer.Argument(help="Policy YAML file to check.")],
    as_json: JsonOption = False,
) -> None:
    """Check a policy file; print its versions, or every problem as FILE:LINE: path: problem."""
    try:
        policy = load_policy(file)
    except BadInput as exc:
        if not as_json:
            raise
        print_json(
            {
                "file": file,
                "ok": False,
                "problems": [
                    {"line": p.row, "field": p.field, "message": p.message} for p in exc.problems
                ],
            }
        )
        raise typer.Exit(exc.exit_code) from None
    if as_json:
        print_json(
            {
                "file": file,
                "ok": True,
                "platform": policy.platform,
                "content_sha256": policy.content_sha256,
                "versions": [_version_summary(v) for v in policy.versions],
            }
        )
        return
    names = ", ".join(
        f"{v.version} (from {v.effective_from:%Y-%m-%d %H:%M}Z)" for v in policy.versions
    )
    count = len(policy.versions)
    console.print(
        f"ok: {file}: {count} version{'s' if count != 1 else ''}: {names}",
        highlight=False,
        soft_wrap=True,
    )
    for v in policy.versions:
        gaps = v.retention_gaps()
        if gaps:
            console.print(
                f"  note: version {v.version} has no retention rule for {', '.join(gaps)}",
                highlight=False,
                soft_wrap=True,
            )


@policy_app.command("show")
@exits_cleanly
def show(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Instant (RFC 3339 with offset) or date (00:00Z); default now."),
    ] = None,
    file: FileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the policy version in force at an instant: purposes, retention, scraping, SLA."""
    instant = parse_instant(at)
    policy = _policy(ctx, file)
    version = policy.version_at(instant)
    if version is None:
        first = policy.versions[0]
        raise ConsentryError(
            f"no policy version is in force at {instant:%Y-%m-%dT%H:%M:%S}Z; the first, "
            f"{first.version}, takes effect {first.effective_from:%Y-%m-%dT%H:%M:%S}Z"
        )
    if as_json:
        print_json(
            {
                "file": policy.source,
                "content_sha256": policy.content_sha256,
                "at": instant,
                "version": version,
                "retention_gaps": version.retention_gaps(),
            }
        )
        return
    _print_version(policy, version, instant)


def _print_version(policy: PolicyFile, version: PolicyVersion, instant: datetime) -> None:
    console.print(
        f"[bold]Policy {version.version}[/bold] of {policy.platform or policy.source}, in force "
        f"since {version.effective_from:%Y-%m-%d %H:%M}Z (shown for {instant:%Y-%m-%d %H:%M}Z)",
        highlight=False,
    )
    purposes = Table(title="Purposes", show_lines=True)
    purposes.add_column("Key", overflow="fold")
    for column in ("Purpose", "Defaults", "AIPREF"):
        purposes.add_column(column)
    for p in version.purposes:
        purposes.add_row(p.key, p.title, describe_purpose(p), ", ".join(p.aipref) or "-")
    console.print(purposes)
    retention = Table(title="Retention")
    retention.add_column("Data")
    retention.add_column("Rule")
    for category in RETENTION_CATEGORIES:
        rule = version.retention.get(category)
        retention.add_row(
            category,
            describe_retention(rule) + (", then deleted" if rule.action == "delete" else "")
            if rule
            else "[yellow]no rule (gap)[/yellow]",
        )
    console.print(retention)
    if version.scraping is None:
        console.print("Scraping: no liquidated-damages clause.", highlight=False)
    else:
        terms = version.scraping
        console.print(
            f"Scraping: {describe_scraping(terms)} Rounding: {terms.rounding}; "
            f"counted: {terms.count}.",
            highlight=False,
            soft_wrap=True,
        )
        if terms.note:
            console.print(f"  note: {terms.note}", highlight=False, soft_wrap=True)
    console.print(
        f"Revocations: licensees must delete revoked posts within "
        f"{version.revocation_sla.describe()}. Minors: people under {version.age_of_majority}.",
        highlight=False,
        soft_wrap=True,
    )


@policy_app.command("diff")
@exits_cleanly
def diff(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="The earlier version, e.g. 2023-09-29.")],
    new: Annotated[str, typer.Argument(help="The later version, e.g. 2024-11-15.")],
    file: FileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Explain in plain English what changed from version OLD to version NEW."""
    policy = _policy(ctx, file)
    changes = diff_versions(policy.get(old), policy.get(new))
    if as_json:
        print_json({"file": policy.source, "from": old, "to": new, "changes": changes})
        return
    console.print(f"Changes from {old} to {new}:", highlight=False)
    if not changes:
        console.print("  No changes.", highlight=False)
    for change in changes:
        console.print(f"  • {change.sentence}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the `policy` command group to the root app."""
    app.add_typer(policy_app, name="policy")
