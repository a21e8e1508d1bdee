"""The public transparency page, the policy history, and the audit API."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consentry.audit.checkpoint import parse_signed_checkpoint
from consentry.audit.event_types import (
    DeliveryBuilt,
    RetentionApplied,
    RevocationConfirmed,
    ScrapingAssessed,
)
from consentry.audit.events import SqlAuditSink
from consentry.audit.merkle import verify_consistency, verify_inclusion
from consentry.audit.policy_history import publish_policy
from consentry.audit.transparency import render_markdown, transparency_report
from consentry.delivery.licensees import registry_for
from consentry.ledger.service import ConsentChange, Evidence
from consentry.policy import Choice
from consentry.serving.auth import issue_token
from consentry.signing import Signer
from consentry.store.models import RevocationRow
from consentry.web import templates
from consentry.web.transparency import purpose_titles, report_context, report_period
from tests.web.conftest import Site
from tests.web.html import Element

THIRD, FIRST, PARTNERS = "ai_training_third_party", "ai_training_first_party", "business_partners"


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def test_transparency_page_suppresses_small_counts(site: Site) -> None:
    for user in ("alice", "emil"):
        site.ledger.record(
            user,
            THIRD,
            Choice.DENY,
            source="settings",
            evidence=Evidence(origin="test"),
        )
    response, doc = site.page("/transparency")
    assert response.status_code == 200
    text = response.text
    assert "<h1>Transparency report</h1>" in text
    assert "&lt;10" in text  # two opt-outs in the US: a small cell
    assert "fewer than 10" in _card(doc, "Third-party AI training")
    assert THIRD not in text  # the policy's title, never the key
    assert "consentry/audit/" in text  # the signed checkpoint
    assert doc.by_id("revocations") is not None
    assert doc.find_all("p", class_="notice panel") == []  # a choice today: the last year
    data = site.client.get("/v1/audit/transparency").json()
    cells = data["consent"]["cells"]
    assert cells
    assert all(c["users"] is None for c in cells)
    assert data["consent"]["purposes"][THIRD]["opted_out"] is None
    assert [(c["purpose"], c["users"]) for c in data["consent"]["monthly"]] == [(THIRD, None)]
    assert site.client.get("/transparency?from=2025-02-01&to=2025-01-01").status_code == 422


def test_policy_history_lists_versions_and_links_changes(site: Site) -> None:
    response, _ = site.page("/policy")
    assert response.status_code == 200
    assert "Policy 2023-09-29" in response.text
    assert "Policy 2024-11-15" in response.text
    assert 'href="/policy/changes/2023-09-29/2024-11-15"' in response.text
    # `consentry init` (the site fixture's init_home) published both versions.
    assert "Recorded in the audit log" in response.text
    assert "Not yet recorded in the audit log" not in response.text
    assert site.client.get("/policy/changes/2023-09-29/2024-11-15").status_code == 200
    assert 'href="/transparency"' in site.client.get("/").text


def test_audit_api_checkpoint_proofs(site: Site) -> None:
    publish_policy(site.ledger.store, site.ledger.policy)
    note = site.client.get("/v1/audit/checkpoint")
    assert note.status_code == 200
    assert note.headers["content-type"].startswith("text/plain")
    cp = parse_signed_checkpoint(note.text).checkpoint
    assert cp.size == 3  # subjects.synced and two policy versions
    c = site.client.get("/v1/audit/consistency", params={"first": 1}).json()
    assert verify_consistency(1, 3, [_b(p) for p in c["path"]], _b(c["first_root"]), cp.root_hash)
    assert site.client.get("/v1/audit/proof/2").status_code == 401
    admin = issue_token(site.ledger.keyring.platform_secret, "ops", role="admin")
    user = issue_token(site.ledger.keyring.platform_secret, "alice", role="user")
    assert (
        site.client.get(
            "/v1/audit/proof/2", headers={"Authorization": f"Bearer {user}"}
        ).status_code
        == 403
    )
    proof = site.client.get(
        "/v1/audit/proof/2", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    assert proof["event_type"] == "policy.published"
    assert verify_inclusion(
        proof["leaf_index"], 3, _b(proof["leaf_hash"]), [_b(p) for p in proof["path"]], cp.root_hash
    )
    assert (
        site.client.get(
            "/v1/audit/proof/99", headers={"Authorization": f"Bearer {admin}"}
        ).status_code
        == 404
    )


# --- the report as a report: headline figures, charts, plain words -------------------------


def _card(doc: Element, title: str) -> str:
    """The text of the headline card titled `title`."""
    for section in doc.find_all("section", class_="figure"):
        if section.find("h3").text() == title:
            return section.text()
    raise AssertionError(f"no headline card {title!r}")


def _choose(site: Site, purpose: str, choice: Choice, at: datetime, users: int, who: str) -> None:
    site.ledger.record_many(
        [
            ConsentChange(
                f"{who}-{i}", purpose, choice, "settings", Evidence(origin="test"), at + i * MINUTE
            )
            for i in range(users)
        ]
    )


MINUTE = timedelta(minutes=1)


def _history(site: Site) -> None:
    """Choices made early in 2025, more than a year ago (like the demo's, which end on
    30 June 2025), by people the platform does not place (region not known).

    Third-party AI training: 12 opt-outs in January, 15 in February, 20 in March. Grok: 2 in
    April (a small count). Business partners: 11 opt-ins in February.
    """
    _choose(site, THIRD, Choice.DENY, datetime(2025, 1, 10, tzinfo=UTC), 12, "jan")
    _choose(site, THIRD, Choice.DENY, datetime(2025, 2, 10, tzinfo=UTC), 15, "feb")
    _choose(site, THIRD, Choice.DENY, datetime(2025, 3, 10, tzinfo=UTC), 20, "mar")
    _choose(site, FIRST, Choice.DENY, datetime(2025, 4, 10, 12, tzinfo=UTC), 2, "apr")
    _choose(site, PARTNERS, Choice.ALLOW, datetime(2025, 2, 20, tzinfo=UTC), 11, "bp")


def _revocation(licensee_id: str, n: int, revoked: datetime, confirmed: datetime | None) -> Any:
    return RevocationRow(
        licensee_id=licensee_id,
        record_id=f"rec-{n}",
        delivery_id="d1",
        delivery_ids=["d1"],
        author_id=f"author-{n}",
        reason="opted_out",
        since=revoked,
        revoked_at=revoked,
        due_at=revoked + timedelta(days=30),
        run_id="rvr-1",
        confirmed_at=confirmed,
        receipt_id=None if confirmed is None else "rcp-1",
    )


def _operations(site: Site) -> None:
    """A licensee with two deliveries (1,234 records), four revocations (two confirmed in May
    2025 after 10 and 14 days, two never), a purge and two scraping assessments."""
    registry = registry_for(site.settings)
    try:
        acme = registry.add("acme", THIRD).record.id
    finally:
        registry.store.close()
    may = datetime(2025, 5, 1, tzinfo=UTC)
    sink = SqlAuditSink()
    with site.ledger.store.session() as session:
        session.add_all(
            [
                _revocation(acme, 1, may, may + timedelta(days=10)),
                _revocation(acme, 2, may, may + timedelta(days=14)),
                _revocation(acme, 3, may, None),
                _revocation(acme, 4, datetime(2025, 6, 20, tzinfo=UTC), None),
            ]
        )
        for n, delivered in ((1, 1200), (2, 34)):
            sink.append(
                session,
                DeliveryBuilt(
                    delivery_id=f"d{n}",
                    licensee_id=acme,
                    purpose=THIRD,
                    as_of="2025-05-01T00:00:00Z",
                    policy_version="2024-11-15",
                    considered=2000,
                    delivered=delivered,
                    manifest_sha256="00" * 32,
                ),
            )
        sink.append(
            session,
            RevocationConfirmed(
                receipt_id="rcp-1",
                licensee_id=acme,
                records=2,
                confirmed=2,
                already_confirmed=0,
                unknown=0,
                digest_sha256="00" * 32,
            ),
        )
        sink.append(
            session,
            RetentionApplied(
                purge_id="purge-1",
                plan_sha256="00" * 32,
                deleted={"lake.posts": 1500, "store.consent_events": 20},
                anonymised={"lake.access_events": 300},
                delivery_dirs_removed=0,
                revocations=0,
                versions_vacuumed={"lake.posts": [0, 1]},
                consent_anchor_removed="00" * 32,
                consent_anchor_added="00" * 32,
            ),
        )
        for n, amount in ((1, "52500.00"), (2, "70500.00")):
            sink.append(
                session,
                ScrapingAssessed(
                    assessment_id=f"{n:032x}",
                    policy_version="2024-11-15",
                    mode="earliest",
                    rounding="pro_rata",
                    engine="duckdb",
                    accesses=60000,
                    entities=40,
                    billed_entities=2,
                    billed_windows=2,
                    total_amount=amount,
                    currency="USD",
                    result_sha256="00" * 32,
                ),
            )


def _rows(part: Element) -> list[list[str]]:
    return [[c.text() for c in r.find_all() if c.tag in ("th", "td")] for r in part.find_all("tr")]


def _charts(doc: Element) -> dict[str, Element]:
    return {f.find("figcaption").text(): f.find("svg") for f in doc.find_all("figure")}


def test_default_period_reaches_back_to_the_last_year_of_choices(site: Site) -> None:
    """On a home where nobody has chosen anything for a year (like the demo, whose choices
    end on 30 June 2025), the default period reaches back to hold the last year of choices,
    and still runs up to now, so what was done since shows too."""
    _history(site)
    _operations(site)  # assessments, deliveries: recorded now
    response, doc = site.page("/transparency")
    assert response.status_code == 200
    today = datetime.now(UTC)
    # The last choice was on 10 April 2025: from 365 days before the end of that day.
    assert doc.find("p", class_="period").text() == (
        f"From 11 April 2024 to {today.day} {today:%B %Y}."
    )
    assert doc.find("input", id="from").attrs["value"] == "2024-04-11"
    assert doc.find("input", id="to").attrs["value"] == today.strftime("%Y-%m-%d")
    assert "reaches back" in doc.find("p", class_="notice panel").text()
    assert "47 people opted out" in _card(doc, "Third-party AI training")
    assert "fewer than 10 people opted out" in _card(doc, "Grok and X's own AI training")
    partners = _card(doc, "Sharing with business partners")
    assert "0 people opted out" in partners
    assert "11 opted in" in partners
    assert "USD 70,500.00" in _card(doc, "Scraping damages")
    assert "1,234 records delivered" in _card(doc, "Deliveries to licensees")
    data = site.client.get("/v1/audit/transparency").json()
    assert data["from"] == "2024-04-11T00:00:00Z"
    assert data["consent"]["purposes"][THIRD] == {"opted_in": 0, "opted_out": 47}
    assert data["scraping_damages"]["assessments"][0]["total_amount"] == "70500.00"


def test_opt_out_chart_has_a_bar_per_month_and_a_stub_for_small_counts(site: Site) -> None:
    _history(site)
    _, doc = site.page("/transparency")
    charts = _charts(doc)
    assert list(charts) == ["Grok and X's own AI training", "Third-party AI training"]
    third = charts["Third-party AI training"]
    assert third.attrs["viewbox"] == "0 0 480 184"  # scales to the column: no fixed width
    assert "width" not in third.attrs
    bars = third.find_all("rect", class_="bar")
    # January to April 2025 (the months with any choice); April has no opt-out: no bar.
    assert [b.text() for b in bars] == [
        "January 2025: 12 people opted out",
        "February 2025: 15 people opted out",
        "March 2025: 20 people opted out",
    ]
    heights = [float(b.attrs["height"]) for b in bars]
    assert heights[2] == 132.0  # 20 is the top of the scale
    assert heights[0] == pytest.approx(132 * 12 / 20, abs=0.1)
    months = [t.text() for t in third.find_all("text") if t.attrs.get("fill") == "#1d2430"]
    assert months == ["Jan", "Feb", "Mar", "Apr"]
    grok = charts["Grok and X's own AI training"]
    assert grok.find_all("rect", class_="bar") == []
    [stub] = grok.find_all("rect", class_="bar-suppressed")
    assert stub.text() == "April 2025: fewer than 10 people opted out"
    assert "No revocation was confirmed in this period." in doc.text()


def test_headline_figures_in_plain_words(site: Site) -> None:
    _history(site)
    _operations(site)
    response, doc = site.page("/transparency?from=2025-01-01")
    assert response.status_code == 200
    deliveries = _card(doc, "Deliveries to licensees")
    assert "1,234 records delivered" in deliveries
    assert "2 deliveries to 1 licensee" in deliveries
    revocations = _card(doc, "Revocations")
    assert "4 records licensees were told to delete" in revocations
    assert "2 confirmed deleted by the licensee, half of them within 12 days" in revocations
    assert "100 % confirmed by the deadline (30 days)" in revocations
    assert "2 awaiting confirmation, 2 overdue" in revocations
    purges = _card(doc, "Retention purges")
    assert "1 purge of data past its retention period" in purges
    assert "1,520 records deleted, 300 anonymised" in purges
    damages = _card(doc, "Scraping damages")
    assert "USD 70,500.00 owed for scraping" in damages  # the latest assessment, not a sum
    assert "by 2 scrapers" in damages
    assert "2 assessments in this period" in damages
    # The detailed tables are there, folded.
    for part in ("consent", "deliveries", "revocation-times", "scraping-assessments", "retention"):
        assert doc.find("details", id=part).attrs.get("open") is None
    assessments = doc.find("details", id="scraping-assessments").text()
    assert "USD 52,500.00" in assessments
    assert "60,000" in assessments
    assert "Not known" in doc.find("details", id="consent").text()
    assert _rows(doc.find("details", id="revocations")) == [
        ["What happened", "Times", "Details"],
        ["Revocation runs", "0", "—"],
        [
            "Deletion receipts from licensees",
            "1",
            "2 records in the receipts, 2 deletions confirmed, 0 confirmed before, "
            "0 not recognised",
        ],
    ]
    assert [r[0] for r in _rows(doc.find("details", id="retention"))][1:] == [
        "Purges planned",
        "Purges carried out",
        "Purges checked afterwards",
        "Legal holds placed",
        "Legal holds released",
    ]


def test_revocation_chart_shows_the_median_against_the_deadline(site: Site) -> None:
    _operations(site)
    _, doc = site.page("/transparency?from=2025-01-01")
    chart = _charts(doc)["Median time to confirm a revocation, in days"]
    [bar] = chart.find_all("rect", class_="bar")  # May; June has no confirmation
    assert bar.text() == "May 2025: 2 revocations confirmed, half within 12 days"
    [deadline] = chart.find_all("line", class_="reference")
    # The scale tops at 50 days: the 30-day deadline line sits at 3/5 of the plot's height.
    assert float(deadline.attrs["y1"]) == pytest.approx(146 - 132 * 30 / 50, abs=0.1)
    assert float(bar.attrs["height"]) == pytest.approx(132 * 12 / 50, abs=0.1)


def test_no_raw_identifiers_on_the_public_page(site: Site) -> None:
    _history(site)
    _operations(site)
    text = site.client.get("/transparency?from=2025-01-01").text
    raw = [
        "revocation.confirmed",
        "revocation.issued",
        "retention.applied",
        "scraping.assessed",
        "policy.published",
        "hold.added",
        "lineage_rows",
        "total_amount",
        "already_confirmed",
        "billed_windows",
        "delivery_dirs_removed",
        "opted_in",
        "opted_out",
        "70500",
        "52500",
    ]
    assert [r for r in raw if r in text] == []
    assert [k for k in (THIRD, FIRST, PARTNERS) if k in text] == []
    assert not re.search(r"\b[a-z]+(?:_[a-z]+)+ ·", text)
    html = site.client.get("/transparency?from=2025-01-01").text
    assert "&lt;10" in html  # Grok's April: suppressed in the tables


def test_small_counts_stay_suppressed_in_every_part(site: Site) -> None:
    """One month under 10 in a series would be recoverable from the period total: the
    smallest other month is hidden too, in the JSON, the tables and the charts."""
    _choose(site, THIRD, Choice.DENY, datetime(2025, 1, 10, tzinfo=UTC), 12, "jan")
    _choose(site, THIRD, Choice.DENY, datetime(2025, 2, 10, tzinfo=UTC), 30, "feb")
    _choose(site, THIRD, Choice.DENY, datetime(2025, 3, 10, tzinfo=UTC), 4, "mar")
    data = site.client.get("/v1/audit/transparency?from=2025-01-01&to=2025-12-31").json()
    monthly = {c["month"]: c["users"] for c in data["consent"]["monthly"]}
    assert monthly == {"2025-01": None, "2025-02": 30, "2025-03": None}
    _, doc = site.page("/transparency?from=2025-01-01&to=2025-12-31")
    chart = _charts(doc)["Third-party AI training"]
    assert [b.text() for b in chart.find_all("rect", class_="bar")] == [
        "February 2025: 30 people opted out"
    ]
    assert len(chart.find_all("rect", class_="bar-suppressed")) == 2
    assert "46 people opted out" in _card(doc, "Third-party AI training")
    assert _rows(doc.find("details", id="consent-monthly"))[1:] == [
        ["January 2025", "Third-party AI training", "0", "<10"],
        ["February 2025", "Third-party AI training", "0", "30"],
        ["March 2025", "Third-party AI training", "0", "<10"],
    ]


def test_the_html_report_file_and_markdown_use_the_same_words(site: Site) -> None:
    _history(site)
    _operations(site)
    begin, stop = report_period("2025-01-01", None)
    report = transparency_report(
        site.ledger.store, Signer.from_keyring(site.ledger.keyring), start=begin, end=stop
    )
    page = templates.get_template("transparency_report.html").render(
        report_context(report, site.ledger.policy)
    )
    assert "USD 70,500.00" in page
    assert "<details" in page
    assert THIRD not in page
    markdown = render_markdown(report, purpose_titles(site.ledger.policy))
    assert "- Third-party AI training: 47 people opted out, 0 opted in." in markdown
    assert "- Scraping damages: USD 70,500.00 owed by 2 entities" in markdown
    assert "| Deletion receipts from licensees | 1 | 2 records in the receipts" in markdown
    assert "revocation.confirmed" not in markdown
