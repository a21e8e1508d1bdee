"""CLI commands: `consentry token …`, `consentry ledger sync`, `consentry consent …`."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.table import Table

from consentry.cli.common import (
    EngineOption,
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    settings_from,
)
from consentry.engine import Lake, connect_for
from consentry.instants import parse_instant
from consentry.keys import Keyring
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.sync import ledger_for, sync_ledger
from consentry.serving.auth import issue_token

__all__ = ["register"]

token_app = typer.Typer(help="Issue API tokens signed with this home's platform secret.")
ledger_app = typer.Typer(help="The consent ledger in the control-plane store.")
consent_app = typer.Typer(help="Resolve consent for one user or for everyone.")

DaysOption = Annotated[
    int, typer.Option("--days", min=1, max=366, help="Days until the token expires.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
AtOption = Annotated[
    str | None,
    typer.Option("--at", help="RFC 3339 instant with offset, or a date (00:00Z); default now."),
]


@token_app.command("user")
@exits_cleanly
def token_user(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user the token acts for.")],
    days: DaysOption = 30,
    as_json: JsonOption = False,
) -> None:
    """A bearer token that acts only on USER_ID's own consent."""
    _print_token(ctx, user_id, "user", days, as_json)


@token_app.command("admin")
@exits_cleanly
def token_admin(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Who the admin token is for.")] = "admin",
    days: DaysOption = 30,
    as_json: JsonOption = False,
) -> None:
    """A bearer token that may read and check anyone's consent (never change it)."""
    _print_token(ctx, name, "admin", days, as_json)


def _print_token(ctx: typer.Context, subject: str, role: str, days: int, as_json: bool) -> None:
    settings = settings_from(ctx)
    token = issue_token(
        Keyring.for_home(settings.home).platform_secret,
        subject,
        "admin" if role == "admin" else "user",
        lifetime=timedelta(days=days),
    )
    if as_json:
        print_json({"token": token, "subject": subject, "role": role, "days": days})
    else:
        typer.echo(token)


@ledger_app.command("sync")
@exits_cleanly
def ledger_sync(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Bring the ledger up to date with the lake's users and consent_events."""
    with progress() as bar:
        bar.add_task("syncing the ledger with the lake", total=None)
        report = sync_ledger(settings_from(ctx))
    if as_json:
        print_json(report)
        return
    for name, counts in report.items():
        console.print(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    if not report:
        console.print("the lake has no users or consent_events yet")


@consent_app.command("show")
@exits_cleanly
def consent_show(
    ctx: typer.Context,
    user_id: Annotated[str, typer.Argument(help="The user to explain.")],
    at: AtOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every purpose for USER_ID at --at: decision, the rule that decided, since when."""
    settings = settings_from(ctx)
    when = parse_instant(at)
    ledger = ledger_for(settings)
    try:
        decisions = ledger.resolve_all(user_id, when)
        known = ledger.subject(user_id) is not None
    finally:
        ledger.store.close()
    rows: list[dict[str, Any]] = [
        {
            "purpose": d.purpose,
            "decision": d.decision.value,
            "rule": d.rule.value,
            "since": d.since,
            "policy_version": d.policy_version,
        }
        for d in decisions
    ]
    if as_json:
        print_json({"user_id": user_id, "at": when, "known_user": known, "purposes": rows})
        return
    table = Table(title=f"{user_id} at {when.isoformat()}" + ("" if known else " (unknown user)"))
    for column in ("purpose", "decision", "rule", "since", "policy_version"):
        table.add_column(column)
    for row in rows:
        since = row["since"]
        table.add_row(
            str(row["purpose"]),
            str(row["decision"]),
            str(row["rule"]),
            since.isoformat() if isinstance(since, datetime) else "",
            str(row["policy_version"] or ""),
        )
    console.print(table)


@consent_app.command("resolve")
@exits_cleanly
def consent_resolve(
    ctx: typer.Context,
    purpose: Annotated[str, typer.Argument(help="The purpose key to resolve.")],
    at: AtOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write every decision to this Parquet file."),
    ] = None,
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Resolve PURPOSE at --at for every user in the lake, vectorised in the engine."""
    settings = settings_from(ctx)
    when = parse_instant(at)
    ledger = ledger_for(settings)
    try:
        events = ledger.events_arrow(purpose, when)
    finally:
        ledger.store.close()
    import ibis

    backend = connect_for(settings, engine)
    lake = Lake.of(settings)
    with progress() as bar:
        bar.add_task(f"resolving {purpose} for every user", total=None)
        users = lake.table(backend, "users")
        expr = resolve_consent_bulk(
            ledger.policy,
            users,
            # A memtable, not a saved table: Spark saves tables into a warehouse folder in
            # the working directory (and refuses the same name on the next run).
            ibis.memtable(events),
            purpose,
            when,
        )
        result = backend.to_pyarrow(expr)
    counts = _counts(result)
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp")
        pq.write_table(result, tmp, compression="zstd")
        tmp.replace(out)
    report: dict[str, Any] = {
        "purpose": purpose,
        "at": when,
        "users": result.num_rows,
        "allow": counts.get(("allow", None), 0),
        "deny": counts.get(("deny", None), 0),
        "by_rule": {f"{d}/{r}": n for (d, r), n in counts.items() if r is not None},
        "out": out,
    }
    if as_json:
        print_json(report)
        return
    console.print(
        f"{purpose} at {when.isoformat()}: {plural(report['users'], 'user')}, "
        f"allow {report['allow']:,}, deny {report['deny']:,}"
    )
    for key, n in sorted(report["by_rule"].items()):
        console.print(f"  {key:<32} {n:>12,}")


def _counts(result: pa.Table) -> dict[tuple[str, str | None], int]:
    """(decision, rule) counts plus (decision, None) totals, computed in Arrow."""
    grouped = result.group_by(["decision", "rule"]).aggregate([("user_id", "count")])
    counts: dict[tuple[str, str | None], int] = {}
    for decision, rule, n in zip(
        grouped.column("decision").to_pylist(),
        grouped.column("rule").to_pylist(),
        grouped.column("user_id_count").to_pylist(),
        strict=True,
    ):
        counts[(decision, rule)] = n
        counts[(decision, None)] = counts.get((decision, None), 0) + n
    return counts


def register(app: typer.Typer) -> None:
    """Add the `token`, `ledger` and `consent` groups to the root app."""
    app.add_typer(token_app, name="token")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(consent_app, name="consent")
