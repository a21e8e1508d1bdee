"""CLI commands: `consentry retention plan|apply|status`, `consentry hold add|release|list`
and `consentry report processing` (docs/retention.md)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consentry.cli.common import (
    EngineOption,
    console,
    err_console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.cli.report import report_app
from consentry.delivery.licensees import registry_for
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.instants import parse_instant
from consentry.keys import Keyring
from consentry.policy import load_policy
from consentry.retention import (
    RetentionPlan,
    Revoker,
    add_hold,
    apply_plan,
    compute_plan,
    list_holds,
    load_plan,
    purge_history,
    records_of_processing,
    release_hold,
    render_markdown,
)
from consentry.store import open_store
from consentry.web.retention import processing_record_html

__all__ = ["hold_app", "register", "retention_app", "revoker"]

retention_app = typer.Typer(
    help="Retention: plan what the policy's rules delete, apply a plan, see purge states.",
    no_args_is_help=True,
)
hold_app = typer.Typer(
    help="Legal holds: keep a user's, an entity's or a category's data whatever retention says.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def revoker() -> Revoker | None:
    """`consentry.revocation.revoke_purged` when that capability is installed, else None
    (apply then refuses to delete delivered posts rather than delete them silently)."""
    try:
        from consentry.revocation import revoke_purged
    except ImportError:
        return None
    found: Revoker = revoke_purged
    return found


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _print_plan(plan: RetentionPlan) -> None:
    table = Table(title=f"Retention plan at {plan.at} (policy {plan.policy.version})")
    for column in ("Category", "Rule", "Records", "Keep", "Delete", "Anonymise", "Held"):
        table.add_column(column, justify="left" if column in ("Category", "Rule") else "right")
    for e in plan.categories:
        table.add_row(
            e.category,
            e.rule_text or "[red]gap: no rule[/red]",
            f"{e.total:,}",
            f"{e.keep + e.done:,}",
            f"{e.delete:,}",
            f"{e.anonymise:,}",
            f"{e.held:,}",
        )
    console.print(table)
    for e in plan.categories:
        for line in e.explanation[1:]:
            console.print(f"  {e.category}: {line}", markup=False, highlight=False)
    for gap in plan.gaps:
        console.print(f"  gap: {gap.message} ({plural(gap.records, 'record')})", markup=False)
    console.print(f"plan sha256 {plan.plan_sha256}", markup=False, highlight=False)


@retention_app.command("plan")
@exits_cleanly
def retention_plan(
    ctx: typer.Context,
    at: Annotated[
        str | None,
        typer.Option("--at", help="Plan for this instant (date or RFC 3339). Default: now."),
    ] = None,
    engine: EngineOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the plan (JSON) to this file for apply."),
    ] = None,
    check_owners: Annotated[
        bool,
        typer.Option(
            "--check-owners", help="Also count records whose account is missing from users."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Compute what the retention rules delete, anonymise and hold (writes nothing)."""
    settings = settings_from(ctx)
    when = parse_instant(at, field="--at")
    plan = compute_plan(settings, at=when, engine=engine, owners=check_owners)
    if out is not None:
        _write_atomically(out, json.dumps(plan.as_dict(), indent=2, ensure_ascii=False) + "\n")
    if as_json:
        print_json(plan.as_dict())
        return
    _print_plan(plan)
    if out is not None:
        console.print(
            f"plan written to {out}; apply it with: consentry retention apply {out}",
            markup=False,
            soft_wrap=True,
        )


@retention_app.command("apply")
@exits_cleanly
def retention_apply(
    ctx: typer.Context,
    plan_file: Annotated[Path, typer.Argument(help="A plan from `retention plan --out`.")],
    as_json: JsonOption = False,
) -> None:
    """Execute exactly a plan (refused when stale), then verify every store."""
    settings = settings_from(ctx)
    plan = load_plan(plan_file)
    recover_first(settings)
    with progress() as bar:
        task = bar.add_task("applying the plan", total=None)
        purge = apply_plan(
            settings,
            plan,
            revoker=revoker(),
            on_progress=lambda step: bar.update(task, description=step),
        )
    if as_json:
        print_json(purge)
    else:
        results = purge["results"]
        console.print(f"purge {purge['purge_id']}: {purge['state']}", markup=False)
        for store, n in results["deleted"].items():
            if n:
                console.print(f"  deleted {plural(n, 'record')} from {store}", markup=False)
        for store, n in results["anonymised"].items():
            if n:
                console.print(f"  anonymised {plural(n, 'record')} in {store}", markup=False)
        dirs = plural(
            results["delivery_dirs_removed"], "delivery directory", "delivery directories"
        )
        console.print(
            f"  removed {dirs}; issued {plural(results['revocations'], 'revocation')}",
            markup=False,
        )
        left = sum(purge["evidence"]["remaining"].values())
        console.print(f"  verification: {plural(left, 'record')} left to purge", markup=False)
    waiting = purge["evidence"].get("awaiting_vacuum")
    if waiting and not as_json:
        console.print(
            f"  the versions it replaced stay readable for the grace period "
            f"({plural(waiting['grace_hours'], 'hour')}); run `consentry lake vacuum` after "
            f"{waiting['due_by']} to delete them and verify the purge",
            markup=False,
        )
    if purge["state"] != "verified" and not waiting:
        raise ConsentryError(
            f"purge {purge['purge_id']} is applied but not verified: records remain "
            "(see `consentry retention status`)"
        )


@retention_app.command("status")
@exits_cleanly
def retention_status(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Purges to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Purges (planned -> applied -> verified) with their counts, and the active holds."""
    settings = settings_from(ctx)
    now = datetime.now(UTC)
    with open_store(settings.resolved_database_url) as store:
        purges = purge_history(store, limit)
        holds = list_holds(store, active_at=now)
    if as_json:
        print_json({"purges": purges, "active_holds": [h.as_dict(now) for h in holds]})
        return
    if not purges:
        console.print("no purge has run yet", markup=False)
    table = Table(title="Purges")
    for column in ("Purge", "State", "Policy", "At", "Deleted", "Anonymised", "Left"):
        table.add_column(column)
    for p in purges:
        results = p["results"] or {}
        evidence = p["evidence"]
        table.add_row(
            p["purge_id"],
            p["state"],
            p["policy_version"],
            p["at"],
            f"{sum((results.get('deleted') or {}).values()):,}",
            f"{sum((results.get('anonymised') or {}).values()):,}",
            "—" if evidence is None else f"{sum(evidence['remaining'].values()):,}",
        )
    if purges:
        console.print(table)
    console.print(f"{plural(len(holds), 'active legal hold')}", markup=False)


@hold_app.command("add")
@exits_cleanly
def hold_add(
    ctx: typer.Context,
    matter: Annotated[str, typer.Option("--matter", help="The legal matter's name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the data must be kept.")],
    user: Annotated[str | None, typer.Option("--user", help="Hold one user's data.")] = None,
    entity: Annotated[
        str | None, typer.Option("--entity", help="Hold one entity's access events.")
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="Hold a whole data category.")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Lapse at this instant (default: until released).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Place a legal hold on exactly one of: a user, an entity, a category."""
    given = [
        (s, v)
        for s, v in (("user", user), ("entity", entity), ("category", category))
        if v is not None
    ]
    if len(given) != 1:
        raise BadInput(
            Problem("command line", None, "--user/--entity/--category", "give exactly one of them")
        )
    scope, target = given[0]
    end = None if until is None else parse_instant(until, field="--until")
    settings = settings_from(ctx)
    with open_store(settings.resolved_database_url) as store:
        hold = add_hold(
            store,
            Keyring.for_settings(settings),
            matter=matter,
            reason=reason,
            scope=scope,
            target=target,
            until=end,
        )
    if as_json:
        print_json(hold.as_dict())
        return
    console.print(f"hold {hold.id} placed on {scope} {target} ({hold.matter})", markup=False)


@hold_app.command("release")
@exits_cleanly
def hold_release(
    ctx: typer.Context,
    hold_id: Annotated[str, typer.Argument(help="The hold's id (hold-…).")],
    as_json: JsonOption = False,
) -> None:
    """Release a legal hold; what it covered is then subject to retention again."""
    settings = settings_from(ctx)
    with open_store(settings.resolved_database_url) as store:
        hold = release_hold(store, hold_id)
    if as_json:
        print_json(hold.as_dict())
        return
    console.print(f"hold {hold.id} released", markup=False)


@hold_app.command("list")
@exits_cleanly
def hold_list(
    ctx: typer.Context,
    active: Annotated[bool, typer.Option("--active", help="Only holds active now.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Every legal hold (or only the active ones), oldest first."""
    settings = settings_from(ctx)
    now = datetime.now(UTC)
    with open_store(settings.resolved_database_url) as store:
        holds = list_holds(store, active_at=now if active else None)
    if as_json:
        print_json([h.as_dict(now) for h in holds])
        return
    if not holds:
        console.print("no legal holds", markup=False)
        return
    table = Table(title="Legal holds")
    for column in ("Hold", "Matter", "Covers", "Since", "Until", "State"):
        table.add_column(column)
    for h in holds:
        d = h.as_dict(now)
        table.add_row(
            d["id"],
            d["matter"],
            f"{d['scope']} {d['target']}",
            d["created_at"],
            d["until"] or "—",
            d["state"],
        )
    console.print(table)


class ReportFormat(StrEnum):
    md = "md"
    json = "json"
    html = "html"


@report_app.command("processing")
@exits_cleanly
def report_processing(
    ctx: typer.Context,
    output_format: Annotated[
        ReportFormat,
        typer.Option("--format", help="Markdown, JSON or HTML.", case_sensitive=False),
    ] = ReportFormat.md,
    at: Annotated[
        str | None,
        typer.Option("--at", help="The policy and licensees in force then (default now)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Records of processing activities (GDPR Art. 30) from the policy and the licensees."""
    settings = settings_from(ctx)
    when = parse_instant(at, field="--at")
    policy = load_policy(settings.policy_file)
    version = policy.version_at(when)
    if version is None:
        raise ConsentryError(f"no policy version is in force at {when.isoformat()}")
    registry = registry_for(settings, policy=policy)
    try:
        licensees = registry.licensees()
    finally:
        registry.store.close()
    record = records_of_processing(policy, version, licensees, at=when)
    if output_format is ReportFormat.json:
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    elif output_format is ReportFormat.html:
        text = processing_record_html(record)
    else:
        text = render_markdown(record)
    if out is None:
        typer.echo(text, nl=False)
    else:
        _write_atomically(out, text)
        err_console.print(f"written to {out}", markup=False)


def register(app: typer.Typer) -> None:
    """Add the `retention` and `hold` groups (the `report processing` command is added to
    the report group when this module is imported)."""
    app.add_typer(retention_app, name="retention")
    app.add_typer(hold_app, name="hold")
