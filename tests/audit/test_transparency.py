"""The transparency report: small-cell suppression, and counts read from ledger and log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from consentry.audit.event_types import DeliveryBuilt, LicenseeChanged, RevocationConfirmed
from consentry.audit.events import SqlAuditSink
from consentry.audit.transparency import SMALL_CELL, render_markdown, suppress, transparency_report
from consentry.signing import Signer
from consentry.store import Store


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
