"""CLI commands: administration of a Consentry home (`consentry init`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.audit.policy_history import publish_policy
from consentry.cli.common import console, exits_cleanly, print_json, settings_from
from consentry.delivery.service import adopt_recorded_deliveries
from consentry.engine.lake_migration import convert_lake
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import load_policy
from consentry.settings import Settings
from consentry.store import open_store

__all__ = ["init_home", "register"]


def _ensure_dir(path: Path) -> bool:
    """Create `path` (and parents); True if it did not exist before."""
    existed = path.is_dir()
    path.mkdir(parents=True, exist_ok=True)
    return not existed


def init_home(settings: Settings) -> dict[str, Any]:
    """Create or bring up to date a Consentry home; safe to run again.

    1. Create the home directory and its `lake/` directory if missing; convert lake tables
       written by the snapshot lake of earlier versions to Delta Lake (`convert_lake`).
    2. Create the secrets in `keys/` that do not exist yet (see `consentry.keys`); the
       master key file only when `CONSENTRY_MASTER_KEY` is not set (a set one is checked).
    3. Open the control-plane store (`settings.resolved_database_url`) and apply every
       pending migration.
    4. Publish the policy file's versions that the audit log has not recorded yet
       (`publish_policy`: a published version that changed is refused, nothing written).
    5. Bring a home made by an earlier version up to date: consent events recorded before
       anchoring are anchored (`consent.anchored`), delivery directories made before
       deliveries were recorded in the store are adopted when their audit event matches.
    6. Report what exists now and what this run created, migrated, published or adopted.
    """
    home_created = _ensure_dir(settings.home)
    lake_created = _ensure_dir(settings.lake_dir)
    converted = convert_lake(settings.lake_dir)
    keys_created = Keyring.for_settings(settings).ensure()
    with open_store(settings.resolved_database_url) as store:
        before = store.current_revision()
        after = store.migrate()
        policy = load_policy(settings.policy_file)
        published = publish_policy(store, policy)
        keyring = Keyring.for_settings(settings)
        anchored = ConsentLedger(store, policy, keyring).anchor_unanchored()
        adopted = adopt_recorded_deliveries(settings)
        meta = store.meta()
        return {
            "home": settings.home,
            "home_created": home_created,
            "lake": settings.lake_dir,
            "lake_created": lake_created,
            "lake_converted": [table.to_json() for table in converted],
            "keys_created": keys_created,
            "store": {
                "backend": store.backend_name,
                "url": store.describe(),
                "revision": after,
                "previous_revision": before,
                "migrated": before != after,
                "schema_created_at": meta.get("schema_created_at"),
            },
            "policy_published": [p.version for p in published],
            "consent_events_anchored": anchored,
            "deliveries_adopted": adopted,
        }


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""

    @app.command("init")
    @exits_cleanly
    def init(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Create the home, its lake directory and the control-plane store (idempotent)."""
        report = init_home(settings_from(ctx, home=False))
        if as_json:
            print_json(report)
            return
        store = report["store"]
        console.print(
            f"home   {report['home']}" + ("  (created)" if report["home_created"] else ""),
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"lake   {report['lake']}" + ("  (created)" if report["lake_created"] else ""),
            highlight=False,
            soft_wrap=True,
        )
        for table in report["lake_converted"]:
            console.print(
                f"lake   converted {table['table']} ({table['rows']:,} rows, {table['files']} "
                f"files of snapshot {table['snapshot']}) to a Delta table",
                highlight=False,
                soft_wrap=True,
            )
        if report["keys_created"]:
            console.print(
                f"keys   created {', '.join(report['keys_created'])} in {report['home']}/keys",
                highlight=False,
                soft_wrap=True,
            )
        change = (
            f"migrated from {store['previous_revision'] or 'empty'}"
            if store["migrated"]
            else "up to date"
        )
        console.print(
            f"store  {store['backend']} {store['url']} at revision {store['revision']} ({change})",
            highlight=False,
            soft_wrap=True,
        )
        if report["policy_published"]:
            console.print(
                f"policy published {', '.join(report['policy_published'])} to the audit log",
                highlight=False,
                soft_wrap=True,
            )
