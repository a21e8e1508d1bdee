"""The transparency report: small-cell suppression, and counts read from ledger and log."""

from __future__ import annotations

import typing
from dataclasses import fields
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consentry.audit.event_types import (
    AUDIT_EVENT_CLASSES,
    DeliveryBuilt,
    LicenseeChanged,
    RevocationConfirmed,
)
from consentry.audit.events import SqlAuditSink
from consentry.audit.transparency import (
    EVENT_TITLES,
    FAMILIES,
    FIELD_LABELS,
    SMALL_CELL,
    confirmation_summary,
    default_period,
    event_title,
    family_details,
    format_count,
    format_duration,
    latest_choice,
    month_span,
    months_between,
    render_markdown,
    suppress,
    transparency_report,
)
from consentry.keys import Keyring
from consentry.ledger.service import ConsentChange, ConsentLedger, Evidence
from consentry.policy import Choice, load_policy
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import Store
from consentry.store.models import Licensee, RevocationRow


@given(st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 40)), min_size=1, max_size=12))
def test_no_small_count_is_published_or_recoverable(rows: list[tuple[str, int]]) -> None:
    cells = [{"group": g, "region": str(i), "users": n} for i, (g, n) in enumerate(rows)]
    suppress(cells, ("group",))
    for cell, (_, n) in zip(cells, rows, strict=True):
        if 0 < n < SMALL_CELL:
            assert cell["users"] is None
        if cell["users"] is not None:
            assert cell["users"] == n
    for group in "ab":
        hidden = [c for c in cells if c["group"] == group and c["users"] is None]
        assert len(hidden) != 1 or not [c for c in cells if c["group"] == group and c["users"]]


def test_report_counts_from_ledger_and_log(store: Store, signer: Signer) -> None:
    sink = SqlAuditSink()
    with store.session() as session:
        sink.append(
            session,
            LicenseeChanged(
                licensee_id="L1",
                name="acme",
                change="added",
                purpose="p",
                regions=[],
                exclude_regions=[],
                languages=[],
                period_from=None,
                period_to=None,
                api_key_hash_prefix="abc",
                at="2025-01-01T00:00:00Z",
            ),
        )
        for delivered in (5, 7):
            sink.append(
                session,
                DeliveryBuilt(
                    delivery_id=f"d{delivered}",
                    licensee_id="L1",
                    purpose="p",
                    as_of="2025-01-01T00:00:00Z",
                    policy_version="v",
                    considered=10,
                    delivered=delivered,
                    manifest_sha256="00" * 32,
                ),
            )
        sink.append(
            session,
            RevocationConfirmed(
                receipt_id="r",
                licensee_id="L1",
                records=4,
                confirmed=3,
                already_confirmed=1,
                unknown=0,
                digest_sha256="00" * 32,
            ),
        )
    now = datetime.now(UTC)
    report = transparency_report(
        store, signer, start=now - timedelta(days=1), end=now + timedelta(days=1)
    )
    assert report["deliveries"] == [
        {
            "licensee_id": "L1",
            "licensee": "acme",
            "purposes": ["p"],
            "deliveries": 2,
            "records": 12,
            "considered": 20,
        }
    ]
    confirmed = report["revocations"]["revocation.confirmed"]
    assert confirmed == {
        "events": 1,
        "totals": {"already_confirmed": 1, "confirmed": 3, "records": 4, "unknown": 0},
    }
    assert report["revocations"]["revocation.issued"]["events"] == 0
    assert report["log"]["size"] == 4
    text = render_markdown(report)
    assert "| acme | p | 2 | 12 |" in text
    old = transparency_report(
        store, signer, start=now - timedelta(days=9), end=now - timedelta(days=8)
    )
    assert old["deliveries"] == []


# --- the period, the monthly series, revocation times, plain words -------------------------

NOW = datetime(2026, 12, 7, 2, 46, tzinfo=UTC)


def test_default_period_is_the_last_year_when_people_chose_in_it() -> None:
    year = timedelta(days=365)
    assert default_period(None, NOW) == (NOW - year, NOW)
    assert default_period(NOW - timedelta(days=3), NOW) == (NOW - year, NOW)
    assert default_period(NOW - year, NOW) == (NOW - year, NOW)
    assert default_period(NOW + timedelta(days=1), NOW) == (NOW - year, NOW)


def test_default_period_reaches_back_to_the_last_year_of_choices() -> None:
    # The demo's choices end on 30 June 2025: from 1 July 2024, up to now.
    latest = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
    assert default_period(latest, NOW) == (datetime(2024, 7, 1, tzinfo=UTC), NOW)
    just_older = NOW - timedelta(days=365, microseconds=1)
    start, stop = default_period(just_older, NOW)
    assert stop == NOW
    assert start == datetime(2025, 12, 8, tzinfo=UTC) - timedelta(days=365)


def test_months_between_and_month_span() -> None:
    assert months_between(datetime(2024, 11, 15, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)) == [
        "2024-11",
        "2024-12",
        "2025-01",
    ]
    assert months_between(datetime(2025, 1, 31, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)) == [
        "2025-01"
    ]
    assert month_span(["2025-02", "2024-11"]) == ["2024-11", "2024-12", "2025-01", "2025-02"]
    assert month_span([]) == []


def test_confirmation_summary() -> None:
    t = datetime(2025, 5, 1, tzinfo=UTC)
    day = timedelta(days=1)
    rows = [(t, t + 2 * day, t + 30 * day), (t, t + 40 * day, t + 30 * day), (t, t + 3 * day, t)]
    assert confirmation_summary(rows) == {
        "confirmed": 3,
        "median_seconds": 3 * 86400,
        "confirmed_by_deadline": 1,
    }
    assert confirmation_summary([]) == {
        "confirmed": 0,
        "median_seconds": None,
        "confirmed_by_deadline": 0,
    }


def test_plain_words() -> None:
    assert format_count(None) == "<10"
    assert format_count(12345) == "12,345"
    assert format_duration(0) == "0 minutes"
    assert format_duration(20) == "1 minute"
    assert format_duration(45 * 60) == "45 minutes"
    assert format_duration(3600) == "1 hour"
    assert format_duration(5.5 * 3600) == "5.5 hours"
    assert format_duration(30 * 3600) == "30 hours"
    assert format_duration(2.5 * 86400) == "2.5 days"
    assert format_duration(12 * 86400) == "12 days"
    assert event_title("revocation.confirmed") == "Deletion receipts from licensees"
    assert event_title("scraping.rechecked") == "Scraping rechecked"
    assert family_details({"unknown": 1, "confirmed": 1234, "total_amount": "70500.00"}) == (
        "1,234 deletions confirmed, 1 not recognised"
    )


def test_every_counted_event_type_and_field_has_plain_words() -> None:
    """What the report sums (numeric payload fields of its families' event types) is named
    in words, so a new event type or field cannot reach the public page as an identifier."""
    prefixes = tuple(p for _, _, family in FAMILIES for p in family)
    missing = []
    for event_type, cls in AUDIT_EVENT_CLASSES.items():
        if not event_type.startswith(prefixes):
            continue
        if event_type not in EVENT_TITLES:
            missing.append(event_type)
        hints = typing.get_type_hints(cls)
        for f in fields(cls):  # type: ignore[arg-type]
            summed = hints[f.name] in (int, float) and not f.name.endswith(
                ("_id", "_seq", "_sha256", "_ref")
            )
            if summed and f.name not in FIELD_LABELS:
                missing.append(f"{event_type}.{f.name}")
    assert missing == []


def _choices(
    ledger: ConsentLedger, purpose: str, choice: Choice, at: datetime, n: int, who: str
) -> None:
    ledger.record_many(
        [
            ConsentChange(
                f"{who}-{i}",
                purpose,
                choice,
                "settings",
                Evidence(origin="test"),
                at + timedelta(minutes=i),
            )
            for i in range(n)
        ]
    )


def test_monthly_choices_and_revocation_times(
    store: Store, signer: Signer, settings: Settings
) -> None:
    """Per month, each person's last choice in that month, suppressed like the period's
    cells; revocation times from the revocation log; activity for the default period."""
    ledger = ConsentLedger(store, load_policy(settings.policy_file), Keyring.for_settings(settings))
    third = "ai_training_third_party"
    assert latest_choice(store) is None
    # 12 people opt out in January (one of them twice: counted once), 30 in February, 3 in
    # March: March is small, so January (the smallest other) is hidden too.
    _choices(ledger, third, Choice.DENY, datetime(2025, 1, 31, 23, tzinfo=UTC), 12, "a")
    _choices(ledger, third, Choice.DENY, datetime(2025, 1, 31, 23, 30, tzinfo=UTC), 1, "a")
    _choices(ledger, third, Choice.DENY, datetime(2025, 2, 1, tzinfo=UTC), 30, "b")
    _choices(ledger, third, Choice.DENY, datetime(2025, 3, 5, tzinfo=UTC), 3, "c")
    # Opted out in February, back in in March: one of each, in its own month.
    _choices(ledger, third, Choice.ALLOW, datetime(2025, 3, 6, tzinfo=UTC), 10, "b")
    assert latest_choice(store) == datetime(2025, 3, 6, 0, 9, tzinfo=UTC)
    t = datetime(2025, 6, 10, 12, tzinfo=UTC)
    day = timedelta(days=1)
    with store.session() as session:
        session.add(
            Licensee(
                id="L1",
                name="acme",
                purpose=third,
                regions=[],
                exclude_regions=[],
                languages=[],
                minimise=[],
                created_at=t - 10 * day,
                sealed_secret=b"x",
                master_key_id="k",
                api_key_hash="00" * 32,
                api_key_prefix="ck_",
            )
        )
        for n, (revoked, confirmed) in enumerate(
            [(t, t + day), (t, t + 3 * day), (t, t + 40 * day), (t - 25 * day, None), (t, None)]
        ):
            session.add(
                RevocationRow(
                    licensee_id="L1",
                    record_id=f"r{n}",
                    delivery_id="d",
                    delivery_ids=["d"],
                    author_id="a",
                    reason="opted_out",
                    since=revoked,
                    revoked_at=revoked,
                    due_at=revoked + 30 * day,
                    run_id="rvr",
                    confirmed_at=confirmed,
                    receipt_id=None if confirmed is None else "rcp",
                )
            )
    report = transparency_report(
        store,
        signer,
        start=datetime(2025, 1, 1, tzinfo=UTC),
        end=datetime(2025, 7, 1, tzinfo=UTC),
    )
    monthly = {(c["month"], c["choice"]): c["users"] for c in report["consent"]["monthly"]}
    assert monthly == {
        ("2025-01", "opted_out"): None,
        ("2025-02", "opted_out"): 30,
        ("2025-03", "opted_out"): None,
        ("2025-03", "opted_in"): 10,
    }
    assert report["consent"]["purposes"][third] == {"opted_in": 10, "opted_out": 35}
    times = report["revocation_times"]
    # Issued: one on 16 May, four on 10 June. Confirmed before July: after 1 and 3 days; the
    # one confirmed in July and two never confirmed are awaiting at the end, and the one
    # from May (due 15 June) is overdue.
    assert {k: v for k, v in times.items() if k != "monthly"} == {
        "issued": 5,
        "confirmed": 2,
        "median_seconds": 2 * 86400,
        "confirmed_by_deadline": 2,
        "awaiting": 3,
        "overdue": 1,
    }
    assert times["monthly"] == [
        {
            "month": "2025-05",
            "issued": 1,
            "confirmed": 0,
            "median_seconds": None,
            "confirmed_by_deadline": 0,
        },
        {
            "month": "2025-06",
            "issued": 4,
            "confirmed": 2,
            "median_seconds": 2 * 86400,
            "confirmed_by_deadline": 2,
        },
    ]
    assert report["purges"]["purges"] == 0
    assert report["scraping_damages"] == {"assessments": []}
