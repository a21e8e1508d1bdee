"""The ledger's read path for one user: statements built once (SQLAlchemy caches their
compiled form) and read as Core rows, skipping the ORM's identity map; the API runs these on
every request."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from consentry.ledger.rules import LatestChoice, SubjectFacts
from consentry.policy import Choice
from consentry.store.models import ConsentEventRow, Subject

__all__ = ["FACTS_AND_EVENTS", "latest_choices", "subject_facts"]


_SUBJECT_FACTS = sa.select(Subject.region, Subject.birth_date).where(
    Subject.user_id == sa.bindparam("user_id")
)
_LATEST_EVENTS = (
    sa.select(
        ConsentEventRow.purpose,
        ConsentEventRow.choice,
        ConsentEventRow.at,
        ConsentEventRow.source,
        ConsentEventRow.event_id,
    )
    .where(
        ConsentEventRow.user_id == sa.bindparam("user_id"),
        ConsentEventRow.at <= sa.bindparam("at"),
    )
    .order_by(ConsentEventRow.at, ConsentEventRow.event_id)
)
_ASKED = sa.select(sa.bindparam("user_id", type_=sa.String).label("asked")).subquery("asked")
FACTS_AND_EVENTS = (
    sa.select(
        Subject.user_id,
        Subject.region,
        Subject.birth_date,
        ConsentEventRow.purpose,
        ConsentEventRow.choice,
        ConsentEventRow.at,
        ConsentEventRow.source,
        ConsentEventRow.event_id,
    )
    .select_from(
        _ASKED.outerjoin(Subject, Subject.user_id == _ASKED.c.asked).outerjoin(
            ConsentEventRow,
            sa.and_(
                ConsentEventRow.user_id == _ASKED.c.asked,
                ConsentEventRow.at <= sa.bindparam("at"),
            ),
        )
    )
    .order_by(ConsentEventRow.at, ConsentEventRow.event_id)
)
"""One row per event of the user at or before `at` (one row of nulls when none), each with
the subject's facts (null when unknown): the API's per-request read in one statement."""


def subject_facts(conn: sa.Connection, user_id: str) -> SubjectFacts | None:
    row = conn.execute(_SUBJECT_FACTS, {"user_id": user_id}).first()
    if row is None:
        return None
    return SubjectFacts(user_id=user_id, region=row.region, birth_date=row.birth_date)


def latest_choices(conn: sa.Connection, user_id: str, at: datetime) -> dict[str, LatestChoice]:
    rows = conn.execute(_LATEST_EVENTS, {"user_id": user_id, "at": at}).all()
    latest: dict[str, LatestChoice] = {}
    for purpose, choice, when, source, event_id in rows:  # one user's events: a handful
        # Ordered by (instant, event_id): the last one seen per purpose is the latest.
        latest[purpose] = LatestChoice(Choice(choice), when, source, event_id)
    return latest
