"""One delivery-and-revocation cycle on a loaded demo, so every page has something to show.

`make run` runs it after `demo load`: a licensee receives a delivery, some of the delivered
authors then opt out, the revocation job tells the licensee, the licensee confirms the
deletion of part of it, and the scrapers are assessed. "Who received my posts", the
revocation admin pages, the scraping admin page and the transparency report then have data
on the first visit. Every step is the ordinary service a real platform uses (docs/demo.md,
"The cycle"); run again, it finds each step done and does nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import duckdb
import sqlalchemy as sa

from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.licensees import registry_for
from consentry.delivery.service import deliver, list_deliveries
from consentry.engine import Lake
from consentry.errors import ConsentryError
from consentry.ledger.service import Evidence
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.revocation import RevocationLog, run_revocations
from consentry.scraping.service import AssessOptions, record_assessment, run_assessment
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import Base, RevocationRow, ScrapingAssessmentRow

__all__ = [
    "CONFIRMED_AUTHORS",
    "CYCLE_LICENSEE",
    "CYCLE_PURPOSE",
    "OPT_OUT_AUTHORS",
    "CycleReport",
    "run_cycle",
]

CYCLE_LICENSEE: Final = "demo-ai-lab"
"""The licensee the cycle delivers to."""
CYCLE_PURPOSE: Final = "ai_training_third_party"
"""Its licence's purpose (the 2024-11-15 policy's third-party AI training)."""
OPT_OUT_AUTHORS: Final = 12
"""Delivered authors who opt out after the delivery: at least the transparency report's
smallest published cell (10), so their opt-outs are counted, not suppressed."""
CONFIRMED_AUTHORS: Final = 8
"""Of those, the authors whose revoked records the licensee confirms deleting; the others'
stay pending (due within the policy's revocation SLA)."""
_ORIGIN: Final = "consentry demo cycle"


@dataclass(slots=True)
class CycleReport:
    """What one run of the cycle found done and what it did."""

    licensee: str
    licensee_created: bool = False
    api_key: str | None = None
    """The new licensee's API key (shown once), when this run created it."""
    delivery_id: str | None = None
    delivery_created: bool = False
    delivered_posts: int = 0
    opted_out: list[str] = field(default_factory=list)
    """Authors this run recorded an opt-out for (already opted-out ones are skipped)."""
    opt_out_authors: list[str] = field(default_factory=list)
    """Every author the cycle opts out (this run or an earlier one)."""
    revocations_new: int = 0
    revocations_total: int = 0
    confirmed: int = 0
    """Records whose deletion this run confirmed."""
    receipt_id: str | None = None
    assessment_id: str | None = None
    assessment_created: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "licensee": self.licensee,
            "licensee_created": self.licensee_created,
            "api_key": self.api_key,
            "delivery_id": self.delivery_id,
            "delivery_created": self.delivery_created,
            "delivered_posts": self.delivered_posts,
            "opted_out": self.opted_out,
            "opt_out_authors": self.opt_out_authors,
            "revocations_new": self.revocations_new,
            "revocations_total": self.revocations_total,
            "confirmed": self.confirmed,
            "receipt_id": self.receipt_id,
            "assessment_id": self.assessment_id,
            "assessment_created": self.assessment_created,
        }


def _authors_to_opt_out(settings: Settings, delivery_id: str) -> list[str]:
    """The first OPT_OUT_AUTHORS authors (by id) with at least two posts in the delivery:
    the same ones on every run, since the delivery's lineage does not change."""
    lake = Lake.of(settings)
    files = lake.files(LINEAGE_TABLE)
    if not files:
        return []
    con = duckdb.connect()
    try:
        rows = con.execute(
            f"SELECT author_id FROM {lake.relation(con, files, 'lineage')} WHERE delivery_id = ? "
            "GROUP BY author_id HAVING count(*) >= 2 ORDER BY author_id LIMIT ?",
            [delivery_id, OPT_OUT_AUTHORS],
        ).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def run_cycle(settings: Settings, *, on_step: Callable[[str], None] | None = None) -> CycleReport:
    """Run the demo's delivery-and-revocation cycle; each step is skipped when done.

    1. The store must be initialised and the demo loaded (the lake has posts), else exit 1.
    2. The licensee `demo-ai-lab` (third-party AI training, everywhere) is added unless it
       exists.
    3. Unless it already has one, it gets a delivery at now.
    4. OPT_OUT_AUTHORS of the delivered authors opt out of the purpose now, through the
       ledger as a settings-page choice would (an author already opted out is skipped).
    5. Unless nothing new was opted out and the licensee already has revocations, the
       revocation job runs for it.
    6. The licensee confirms the deletion of the pending revocations of the first
       CONFIRMED_AUTHORS of those authors (one receipt), when any is pending.
    7. Unless an assessment is recorded already, the scrapers are assessed and recorded.
    """
    step = on_step or (lambda _message: None)
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            raise ConsentryError(
                f"the store at {store.describe()} is not initialised or not up to date; "
                "run `consentry init` first"
            )
    if not Lake.of(settings).exists("posts"):
        raise ConsentryError(
            f"the lake at {settings.lake_dir} has no posts: load the demo first "
            "(`consentry demo generate` or `consentry demo load`)"
        )
    report = CycleReport(licensee=CYCLE_LICENSEE)

    step("adding the licensee")
    registry = registry_for(settings)
    try:
        record = registry.find(CYCLE_LICENSEE)
        if record is None:
            added = registry.add(CYCLE_LICENSEE, CYCLE_PURPOSE)
            record, report.api_key, report.licensee_created = added.record, added.api_key, True
    finally:
        registry.store.close()

    ours = [m for m in list_deliveries(settings) if m["licensee"] == CYCLE_LICENSEE]
    if ours:
        first = ours[-1]  # newest first: the last is the cycle's own delivery
    else:
        first = deliver(settings, CYCLE_LICENSEE, on_progress=lambda s: step(f"delivering: {s}"))
        report.delivery_created = True
    report.delivery_id = first["delivery_id"]
    report.delivered_posts = int(first["counts"]["delivered"])

    step("opting some delivered authors out")
    authors = _authors_to_opt_out(settings, first["delivery_id"])
    report.opt_out_authors = authors
    now = datetime.now(UTC)
    ledger = ledger_for(settings)
    try:
        shown = ledger.policy.version_at(now)
        for author in authors:
            if ledger.resolve(author, CYCLE_PURPOSE, now).decision is Choice.DENY:
                continue
            ledger.record(
                author,
                CYCLE_PURPOSE,
                Choice.DENY,
                source="settings",
                evidence=Evidence(
                    origin=_ORIGIN,
                    client="platform",
                    shown_version=shown.version if shown else None,
                ),
            )
            report.opted_out.append(author)
    finally:
        ledger.store.close()

    with open_store(settings.resolved_database_url) as store:
        logged = _count(store, RevocationRow, RevocationRow.licensee_id == record.id)
    if report.opted_out or not logged:
        run = run_revocations(
            settings, CYCLE_LICENSEE, on_progress=lambda s: step(f"revoking: {s}")
        )
        report.revocations_new = run.new

    step("confirming deletions")
    with open_store(settings.resolved_database_url) as store:
        with store.session() as session:
            pending = session.scalars(
                sa.select(RevocationRow.record_id)
                .distinct()
                .where(
                    RevocationRow.licensee_id == record.id,
                    RevocationRow.author_id.in_(authors[:CONFIRMED_AUTHORS] or [""]),
                    RevocationRow.confirmed_at.is_(None),
                )
                .order_by(RevocationRow.record_id)
            ).all()
        if pending:
            receipt = RevocationLog(store, ledger.policy).confirm(record.id, list(pending))
            report.confirmed, report.receipt_id = len(receipt.confirmed), receipt.receipt_id
        report.revocations_total = _count(
            store, RevocationRow, RevocationRow.licensee_id == record.id
        )
        assessed = _count(store, ScrapingAssessmentRow)

    if not assessed:
        step("assessing the scrapers")
        assessment = run_assessment(settings, AssessOptions(), on_progress=step)
        report.assessment_id = record_assessment(settings, assessment)
        report.assessment_created = report.assessment_id is not None
    return report


def _count(store: Store, model: type[Base], *conditions: sa.ColumnElement[bool]) -> int:
    """Rows of `model`'s table matching every condition."""
    with store.session() as session:
        query = sa.select(sa.func.count()).select_from(model).where(*conditions)
        return int(session.scalar(query) or 0)
