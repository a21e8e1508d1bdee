"""Publishing policy versions into the audit log, and the impact of a new version."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from consentry.audit.events import SqlAuditSink
from consentry.audit.policy_history import publish_policy, published_versions
from consentry.cli.admin import init_home
from consentry.errors import ConsentryError
from consentry.keys import Keyring
from consentry.ledger.impact import policy_impact
from consentry.ledger.service import ConsentLedger, Evidence
from consentry.policy import Choice, load_policy, parse_policy
from consentry.settings import Settings
from consentry.store import Store, open_store
from tests.factories import users_table

POPULATION = [
    ("us-1", "US", date(1990, 1, 1)),
    ("us-2", "US", date(1991, 1, 1)),
    ("de-1", "DE", date(1980, 1, 1)),
    ("fr-1", "FR", date(1981, 1, 1)),
    ("kid", "US", date(2015, 1, 1)),
    ("jp-unknown", "JP", None),
]


@pytest.fixture
def ledger(settings: Settings) -> ConsentLedger:
    init_home(settings)
    ledger = ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_settings(settings),
        SqlAuditSink(),
    )
    ledger.sync_subjects(users_table(POPULATION))
    return ledger


def test_init_publishes_and_publishing_again_is_idempotent(ledger: ConsentLedger) -> None:
    # `init_home` (in the fixture) published both versions of the shipped policy.
    assert set(published_versions(ledger.store)) == {"2023-09-29", "2024-11-15"}
    assert publish_policy(ledger.store, ledger.policy) == []
    text = Path(ledger.policy.source).read_text(encoding="utf-8")
    changed = parse_policy(text.replace("max_age: 18 months", "max_age: 12 months", 1), source="x")
    with pytest.raises(ConsentryError, match="cannot change"):
        publish_policy(ledger.store, changed)
    assert set(published_versions(ledger.store)) == {"2023-09-29", "2024-11-15"}


def test_publish_records_new_versions_in_effective_order(store: Store, settings: Settings) -> None:
    first = publish_policy(store, load_policy(settings.policy_file))
    assert [p.version for p in first] == ["2023-09-29", "2024-11-15"]
    assert publish_policy(store, load_policy(settings.policy_file)) == []


def test_impact_counts_users_whose_decision_changes(ledger: ConsentLedger) -> None:
    # fr-1 opted in explicitly to Grok training: the EU default change does not touch them.
    ledger.record(
        "fr-1",
        "ai_training_first_party",
        Choice.ALLOW,
        source="settings",
        evidence=Evidence(origin="test"),
        at=load_policy(ledger.policy.source).get("2023-09-29").effective_from.replace(year=2024),
    )
    report = policy_impact(ledger, "2023-09-29", "2024-11-15", with_users=True)
    cells = {(c["purpose"], c["region"], c["from"], c["to"]): c["users"] for c in report.cells}
    # New third-party purpose: adults outside Europe and unknown ages become allowed.
    assert cells[("ai_training_third_party", "US", "deny", "allow")] == 2
    assert cells[("ai_training_third_party", "JP", "deny", "allow")] == 1
    # Grok training now off by default in the EU: only de-1 (fr-1 chose it explicitly).
    assert cells[("ai_training_first_party", "DE", "allow", "deny")] == 1
    assert ("ai_training_first_party", "FR", "allow", "deny") not in cells
    # Business partners did not change between the versions: nobody moves.
    assert not any(key[0] == "business_partners" for key in cells)
    assert report.subjects == len(POPULATION)
    listed = {(u["user_id"], u["purpose"]) for u in report.users or []}
    assert ("de-1", "ai_training_first_party") in listed
    assert all(u != "kid" for u, _ in listed)  # a minor is denied under both versions
    assert sum(c["users"] for c in report.cells) == len(listed)
    totals = report.by_purpose()
    assert totals["ai_training_third_party"]["to_allow"] == 3
