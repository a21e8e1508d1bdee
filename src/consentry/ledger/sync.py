"""Keep the ledger in step with the lake: users become subjects, lake consent events
become ledger events. Run after every import of `users` or `consent_events`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import load_policy
from consentry.settings import Settings
from consentry.store import open_store

__all__ = ["SYNCED_TABLES", "ledger_for", "sync_ledger"]

SYNCED_TABLES = ("users", "consent_events")
"""Lake tables the ledger mirrors."""


def ledger_for(settings: Settings) -> ConsentLedger:
    """The home's ledger: its store, its policy file, its keys."""
    return ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_settings(settings),
    )


def sync_ledger(settings: Settings, tables: Iterable[str] = SYNCED_TABLES) -> dict[str, Any]:
    """Bring the ledger up to date with the named lake tables; return what changed.

    1. `users` -> `subjects` (upsert every user: region, birth date, status instants).
    2. `consent_events` -> ledger events not seen before (by event_id), then the current
       state of every affected user is recomputed.
    Each step is one transaction with its audit event.
    """
    lake = Lake.of(settings)
    ledger = ledger_for(settings)
    report: dict[str, Any] = {}
    try:
        wanted = set(tables)
        if "users" in wanted and lake.exists("users"):
            read, new, updated = ledger.sync_subjects(lake.read_arrow("users"))
            report["subjects"] = {"read": read, "new": new, "updated": updated}
        if "consent_events" in wanted and lake.exists("consent_events"):
            result = ledger.import_events(lake.read_arrow("consent_events"))
            report["consent_events"] = {
                "read": result.events_read,
                "new": result.events_new,
                "subjects_affected": result.subjects_affected,
            }
    finally:
        ledger.store.close()
    return report
