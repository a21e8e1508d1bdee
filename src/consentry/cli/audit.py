"""CLI commands: `consentry audit checkpoint|prove|consistency|verify`,
`consentry report transparency`, and `consentry policy publish|impact` (docs/audit.md,
docs/transparency.md)."""

from __future__ import annotations

import base64
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consentry.api.audit import consistency_json, inclusion_json
from consentry.audit.checkpoint import parse_signed_checkpoint
from consentry.audit.log import AuditLog, LogIntegrityError
from consentry.audit.merkle import verify_consistency, verify_inclusion
from consentry.audit.policy_history import publish_policy
from consentry.audit.transparency import render_markdown, transparency_report
from consentry.cli.common import (
    OldOutputOption,
    console,
    err_console,
    exits_cleanly,
    out_path,
    plural,
    print_json,
    progress,
    settings_from,
)
from consentry.cli.policy import policy_app
from consentry.cli.report import report_app
from consentry.errors import EXIT_FAILURE, BadInput, ConsentryError, Problem
from consentry.instants import parse_instant
from consentry.jsonable import to_jsonable
from consentry.keys import Keyring
from consentry.ledger.impact import policy_impact
from consentry.ledger.sync import ledger_for
from consentry.observe.alerts import push_alert
from consentry.policy import load_policy
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import Store, open_store
from consentry.web import templates
from consentry.web.transparency import purpose_titles, report_context, report_period

__all__ = ["audit_app", "register"]

audit_app = typer.Typer(
    help="The tamper-evident audit log: signed checkpoints, inclusion and consistency proofs, "
    "full verification.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    store = open_store(settings.resolved_database_url)
    try:
        yield store
    finally:
        store.close()


def _signer(settings: Settings) -> Signer:
    return Signer.from_keyring(Keyring.for_settings(settings))


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TransparencyFormat(StrEnum):
    """`report transparency --format`."""

    md = "md"
    html = "html"
    json = "json"


def _head_size(log: AuditLog) -> int | None:
    """The leaves the head row promises (the progress bar's total); None when the head is
    broken, which `verify` then reports."""
    try:
        return log.head().size
    except LogIntegrityError:
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@audit_app.command("checkpoint")
@exits_cleanly
def checkpoint_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Also write the signed checkpoint here.")
    ] = None,
    old_output: OldOutputOption = None,
    as_json: JsonOption = False,
) -> None:
    """Sign the log's current size and root hash, record the checkpoint and print it."""
    output = out_path(out, old_output)
    settings = settings_from(ctx)
    with _store(settings) as store:
        signed = AuditLog(store).checkpoint(_signer(settings))
    note = signed.note()
    if output is not None:
        _write_atomically(output, note)
    if as_json:
        cp = signed.checkpoint
        print_json(
            {
                "origin": cp.origin,
                "size": cp.size,
                "root_hash": _b64(cp.root_hash),
                "key_name": signed.key_name,
                "signature": _b64(signed.signature),
                "note": note,
            }
        )
        return
    typer.echo(note, nl=False)


@audit_app.command("prove")
@exits_cleanly
def prove_command(
    ctx: typer.Context,
    event_id: Annotated[int, typer.Argument(help="The audit event's id (its seq).")],
    size: Annotated[
        int | None, typer.Option("--size", help="Prove against this tree size (default: now).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the inclusion proof of one audit event (checked before it is printed)."""
    with _store(settings_from(ctx)) as store:
        proof = AuditLog(store).prove(event_id, size)
    leaf = proof.leaf
    if not verify_inclusion(
        leaf.leaf_index, proof.tree_size, leaf.leaf_hash, proof.path, proof.root_hash
    ):
        raise ConsentryError(f"the proof for event {event_id} does not verify: run audit verify")
    if as_json:
        print_json(inclusion_json(proof))
        return
    console.print(
        f"event {leaf.event_id} ({leaf.event_type}, {leaf.at}) is leaf {leaf.leaf_index} of "
        f"{proof.tree_size}",
        highlight=False,
        markup=False,
    )
    console.print(f"leaf hash  {_b64(leaf.leaf_hash)}", highlight=False, markup=False)
    console.print(f"root hash  {_b64(proof.root_hash)}", highlight=False, markup=False)
    for i, h in enumerate(proof.path):
        console.print(f"path[{i:>2}]   {_b64(h)}", highlight=False, markup=False)


@audit_app.command("consistency")
@exits_cleanly
def consistency_command(
    ctx: typer.Context,
    old_size: Annotated[int, typer.Argument(help="The older tree size.")],
    new_size: Annotated[
        int | None, typer.Argument(help="The newer tree size (default: the current size).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print the consistency proof that the log at NEW_SIZE extends the log at OLD_SIZE."""
    with _store(settings_from(ctx)) as store:
        proof = AuditLog(store).consistency(old_size, new_size)
    if not verify_consistency(
        proof.first, proof.second, proof.path, proof.first_root, proof.second_root
    ):
        raise ConsentryError("the consistency proof does not verify: run audit verify")
    if as_json:
        print_json(consistency_json(proof))
        return
    console.print(
        f"size {proof.first} root {_b64(proof.first_root)}\n"
        f"size {proof.second} root {_b64(proof.second_root)}",
        highlight=False,
        markup=False,
    )
    for i, h in enumerate(proof.path):
        console.print(f"path[{i:>2}]   {_b64(h)}", highlight=False, markup=False)


@audit_app.command("verify")
@exits_cleanly
def verify_command(
    ctx: typer.Context,
    from_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--from-checkpoint",
            help="A signed checkpoint saved earlier: the log must still have its root.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every leaf, subtree and root; exit 1 naming the first bad leaf."""
    settings = settings_from(ctx)
    given = None
    if from_checkpoint is not None:
        try:
            text = from_checkpoint.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(
                Problem(str(from_checkpoint), None, "--from-checkpoint", exc.strerror or str(exc))
            ) from None
        given = parse_signed_checkpoint(text, location=str(from_checkpoint))
    signer = _signer(settings)
    with _store(settings) as store, progress() as bar:
        log = AuditLog(store)
        task = bar.add_task("verifying the audit log", total=_head_size(log))
        report = log.verify(
            signer.public_key,
            checkpoint=given,
            on_leaves=lambda n: bar.advance(task, n),
        )
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "size": report.size,
                "root_hash": _b64(report.root_hash),
                "checkpoints_checked": report.checkpoints_checked,
                "first_bad_leaf": report.first_bad_leaf,
                "first_bad_event": report.first_bad_event,
                "problems": report.problems,
            }
        )
    elif report.ok:
        console.print(
            f"ok: {plural(report.size, 'leaf', 'leaves')}, root {_b64(report.root_hash)}, "
            f"{plural(report.checkpoints_checked, 'checkpoint')} "
            f"{'holds' if report.checkpoints_checked == 1 else 'hold'}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    else:
        if report.first_bad_leaf is not None:
            event = (
                f" (audit event {report.first_bad_event})"
                if report.first_bad_event is not None
                else ""
            )
            err_console.print(
                f"TAMPERED: first bad leaf {report.first_bad_leaf}{event}",
                highlight=False,
                markup=False,
            )
        for problem in report.problems:
            err_console.print(f"error: {problem}", highlight=False, markup=False, soft_wrap=True)
    if not report.ok:
        push_alert(
            settings,
            "audit.verify_failed",
            {
                "size": report.size,
                "first_bad_leaf": report.first_bad_leaf,
                "first_bad_event": report.first_bad_event,
                "problems": report.problems[:20],
            },
        )
        raise typer.Exit(EXIT_FAILURE)


@report_app.command("transparency")
@exits_cleanly
def transparency_command(
    ctx: typer.Context,
    start: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Start of the period (date or RFC 3339); default a year before --to, or "
            "without --to from a year before the last day someone made a choice if older.",
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="End of the period (a date includes that day); default now."),
    ] = None,
    fmt: Annotated[
        TransparencyFormat,
        typer.Option("--format", help="Markdown, HTML or JSON.", case_sensitive=False),
    ] = TransparencyFormat.md,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the report here instead of stdout."),
    ] = None,
    old_output: OldOutputOption = None,
) -> None:
    """The transparency report: opt-ins/outs, deliveries, revocations, retention, scraping."""
    output = out_path(out, old_output)
    settings = settings_from(ctx)
    with _store(settings) as store:
        begin, stop = report_period(start, end, store=store)
        report = transparency_report(store, _signer(settings), start=begin, end=stop)
    policy = load_policy(settings.policy_file)
    if fmt is TransparencyFormat.json:
        text = json.dumps(to_jsonable(report), indent=2, ensure_ascii=False) + "\n"
    elif fmt is TransparencyFormat.md:
        text = render_markdown(report, purpose_titles(policy))
    else:
        page = templates.get_template("transparency_report.html")
        text = page.render(report_context(report, policy))
    if output is not None:
        _write_atomically(output, text)
        err_console.print(f"wrote {output}", highlight=False, markup=False)
        return
    typer.echo(text, nl=not text.endswith("\n"))


@policy_app.command("publish")
@exits_cleanly
def publish_command(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Policy file to publish (default: the configured one)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record each not-yet-published policy version as a `policy.published` audit event."""
    settings = settings_from(ctx)
    policy = load_policy(file if file is not None else settings.policy_file)
    with _store(settings) as store:
        published = publish_policy(store, policy)
    if as_json:
        print_json(
            {
                "published": [
                    {"version": p.version, "event_id": p.event_id, "sha256": p.version_sha256}
                    for p in published
                ]
            }
        )
        return
    if not published:
        console.print("Every version is already published.", highlight=False)
    for p in published:
        console.print(
            f"published {p.version} (effective {p.effective_from}) as audit event {p.event_id}",
            highlight=False,
            markup=False,
        )


@policy_app.command("impact")
@exits_cleanly
def impact_command(
    ctx: typer.Context,
    old: Annotated[str, typer.Argument(help="The earlier version, e.g. 2023-09-29.")],
    new: Annotated[str, typer.Argument(help="The later version, e.g. 2024-11-15.")],
    at: Annotated[
        str | None,
        typer.Option("--at", help="Instant to compare at (default: NEW's effective_from)."),
    ] = None,
    users: Annotated[
        bool, typer.Option("--users", help="Also list every affected user and purpose.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Count the users whose effective consent changes from version OLD to NEW, per
    purpose and region (vectorised over every subject)."""
    settings = settings_from(ctx)
    instant = parse_instant(at) if at else None
    ledger = ledger_for(settings)
    try:
        report = policy_impact(ledger, old, new, at=instant, with_users=users)
    finally:
        ledger.store.close()
    if as_json:
        print_json(report.as_dict())
        return
    console.print(
        f"From {old} to {new} at {report.at:%Y-%m-%d %H:%M}Z, over "
        f"{plural(report.subjects, 'user')}:",
        highlight=False,
    )
    totals = report.by_purpose()
    if not totals:
        console.print("  nobody's effective consent changes.", highlight=False)
        return
    table = Table(show_lines=False)
    for column in ("Purpose", "Region", "From", "To", "Users"):
        table.add_column(column, justify="right" if column == "Users" else "left")
    for cell in report.cells:
        table.add_row(
            cell["purpose"], cell["region"], cell["from"], cell["to"], f"{cell['users']:,}"
        )
    console.print(table)
    for purpose, t in totals.items():
        console.print(
            f"  {purpose}: {plural(t['changed'], 'user')} "
            f"{'changes' if t['changed'] == 1 else 'change'} ({t['to_allow']:,} to allow, "
            f"{t['to_deny']:,} to deny)",
            highlight=False,
        )
    for row in report.users or []:
        console.print(
            f"  {row['user_id']}  {row['purpose']}  {row['region']}  "
            f"{row['from']} -> {row['to']} ({row['rule_from']} -> {row['rule_to']})",
            highlight=False,
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add the `audit` group (the `report transparency` and `policy publish|impact`
    commands are added to their groups when this module is imported)."""
    app.add_typer(audit_app, name="audit")
