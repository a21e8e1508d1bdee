"""The ledger over the real store (SQLite and PostgreSQL): appends, state, audit, imports."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.errors import BadInput
from consentry.keys import Keyring
from consentry.ledger.rules import ConsentRule
from consentry.ledger.service import ConsentLedger, Evidence
from consentry.policy import Choice, load_policy
from consentry.schema import arrow_schema
from consentry.settings import DEFAULT_POLICY_FILE
from consentry.store import open_store
from consentry.store.models import ConsentEventRow, ConsentStateRow

THIRD = "ai_training_third_party"
UTC_TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ConsentLedger]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.migrate()
    yield ConsentLedger(store, load_policy(DEFAULT_POLICY_FILE), Keyring(tmp_path / "keys"))
    store.close()


def _users() -> pa.Table:
    return pa.table(
        {
            "user_id": ["u1", "u2", "u3"],
            "created_at": pa.array([datetime(2020, 1, 1, tzinfo=UTC)] * 3, UTC_TS),
            "region": ["US", "FR", "JP"],
            "birth_date": pa.array([date(1980, 1, 1), None, date(2011, 3, 3)], pa.date32()),
            "protected": [False, True, False],
            "deactivated_at": pa.array([None] * 3, UTC_TS),
            "deleted_at": pa.array([None] * 3, UTC_TS),
        },
        schema=arrow_schema("users"),
    )


def _events(rows: list[tuple[str, str, str, str, datetime, str]]) -> pa.Table:
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "purpose": [r[2] for r in rows],
            "choice": [r[3] for r in rows],
            "at": pa.array([r[4] for r in rows], UTC_TS),
            "source": [r[5] for r in rows],
        },
        schema=arrow_schema("consent_events"),
    )


def test_record_appends_updates_state_and_audits_without_personal_data(
    ledger: ConsentLedger,
) -> None:
    ledger.sync_subjects(_users())
    event = ledger.record(
        "u1",
        THIRD,
        Choice.DENY,
        source="settings",
        evidence=Evidence(
            origin="POST /settings/privacy", client="browser", shown_version="2024-11-15"
        ),
    )
    assert event.policy_version == "2024-11-15"
    decision = ledger.resolve("u1", THIRD, datetime.now(UTC))
    assert (decision.decision, decision.rule) == (Choice.DENY, ConsentRule.EXPLICIT)
    with ledger.store.session() as session:
        state = session.get(ConsentStateRow, ("u1", THIRD))
        assert state is not None
        assert state.event_id == event.event_id
        audit = SqlAuditSink.read(session, event_type="consent.changed")
    assert len(audit) == 1
    payload = audit[0].payload
    assert payload["subject_ref"] == ledger.keyring.pseudonym("u1")
    assert payload["ledger_seq"] == event.seq
    assert "u1" not in json.dumps(payload)


def test_an_older_event_does_not_move_the_current_state_back(ledger: ConsentLedger) -> None:
    now = datetime.now(UTC)
    ledger.record("u1", THIRD, Choice.DENY, source="api", evidence=Evidence(), at=now)
    ledger.record(
        "u1",
        THIRD,
        Choice.ALLOW,
        source="support",
        evidence=Evidence(),
        at=now - timedelta(days=30),
    )
    with ledger.store.session() as session:
        state = session.get(ConsentStateRow, ("u1", THIRD))
        assert state is not None
        assert state.choice == "deny"
    assert [e.choice for e in ledger.history("u1")] == [Choice.ALLOW, Choice.DENY]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"purpose": "nope"}, "purpose"),
        ({"source": "telepathy"}, "source"),
        ({"at": datetime.now(UTC) + timedelta(days=1)}, "at"),
        # Third-party training did not exist before 2024-11-15.
        ({"at": datetime(2024, 1, 1, tzinfo=UTC)}, "purpose"),
    ],
)
def test_bad_records_change_nothing(
    ledger: ConsentLedger, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"purpose": THIRD, "source": "api", **kwargs}
    with pytest.raises(BadInput) as raised:
        ledger.record("u1", args.pop("purpose"), Choice.DENY, evidence=Evidence(), **args)
    assert raised.value.problems[0].field == field
    with ledger.store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ConsentEventRow)) == 0


def test_import_is_idempotent_and_rebuilds_state(ledger: ConsentLedger) -> None:
    t0 = datetime(2024, 12, 1, tzinfo=UTC)
    rows = [
        ("e1", "u1", THIRD, "deny", t0, "settings"),
        ("e2", "u1", THIRD, "allow", t0 + timedelta(days=1), "api"),
        ("e3", "u2", THIRD, "allow", t0, "import"),
        ("e4", "u2", "business_partners", "deny", t0, "gpc"),
    ]
    first = ledger.import_events(_events(rows))
    assert (first.events_read, first.events_new, first.subjects_affected) == (4, 4, 2)
    again = ledger.import_events(_events(rows))
    assert again.events_new == 0
    history = ledger.history("u1")
    assert [e.policy_version for e in history] == ["2024-11-15", "2024-11-15"]
    assert history[0].evidence == Evidence(origin="lake:consent_events", client="import")
    with ledger.store.session() as session:
        state = session.get(ConsentStateRow, ("u1", THIRD))
        assert state is not None
        assert state.choice == "allow"
        imported = SqlAuditSink.read(session, event_type="consent.imported")
    assert [a.payload["events_new"] for a in imported] == [4, 0]


def test_gpc_respects_explicit_choices_and_is_recorded_once(ledger: ConsentLedger) -> None:
    ledger.sync_subjects(_users())
    ledger.record("u1", "business_partners", Choice.ALLOW, source="settings", evidence=Evidence())
    first = ledger.record_gpc("u1", evidence=Evidence(client="browser"))
    assert sorted(e.purpose for e in first) == ["ai_training_first_party", THIRD]
    assert ledger.record_gpc("u1", evidence=Evidence(client="browser")) == []
    rules = {d.purpose: d.rule for d in ledger.resolve_all("u1", datetime.now(UTC))}
    assert rules == {
        THIRD: ConsentRule.GPC,
        "ai_training_first_party": ConsentRule.GPC,
        "business_partners": ConsentRule.EXPLICIT,
    }


def test_check_matches_resolve_for_every_user(ledger: ConsentLedger) -> None:
    ledger.sync_subjects(_users())
    ledger.record("u2", THIRD, Choice.ALLOW, source="settings", evidence=Evidence())
    at = datetime.now(UTC)
    ids = ["u3", "u2", "ghost", "u1"]
    decisions, known = ledger.check(THIRD, at, ids)
    assert known == [True, True, False, True]
    assert decisions == [ledger.resolve(u, THIRD, at) for u in ids]


def test_sync_subjects_upserts(ledger: ConsentLedger) -> None:
    assert ledger.sync_subjects(_users()) == (3, 3, 0)
    changed = _users().set_column(2, "region", pa.array(["DE", "FR", "JP"]))
    assert ledger.sync_subjects(changed) == (3, 0, 3)
    subject = ledger.subject("u1")
    assert subject is not None
    assert subject.region == "DE"


def test_events_arrow_feeds_the_bulk_form(ledger: ConsentLedger) -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    ledger.import_events(
        _events(
            [
                ("e1", "u1", THIRD, "deny", t0, "settings"),
                ("e2", "u1", THIRD, "allow", t0 + timedelta(days=9), "api"),
            ]
        )
    )
    table = ledger.events_arrow(THIRD, t0 + timedelta(days=1))
    assert table.column_names == ["user_id", "purpose", "choice", "at", "source", "event_id"]
    assert table.column("event_id").to_pylist() == ["e1"]
