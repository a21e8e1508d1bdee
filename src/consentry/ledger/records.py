"""The ledger's records as plain data: a choice to record, how it was made, an event as
stored, what an import changed; and the conversions of stored rows into records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from consentry.policy import Choice
from consentry.store.models import ConsentEventRow

__all__ = [
    "ConsentChange",
    "ConsentEventRecord",
    "Evidence",
    "LedgerImport",
    "record_of_orm",
    "record_of_row",
]


@dataclass(frozen=True, slots=True)
class Evidence:
    """How a choice was made — never a raw IP address or other personal data.

    `origin`: where (a page path, an API route, an import file); `client`: the client class
    (browser, api, platform, support, import); `shown_version`: the policy version the user
    was shown when choosing.
    """

    origin: str | None = None
    client: str | None = None
    shown_version: str | None = None


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """A choice to record (`ConsentLedger.record_many`)."""

    user_id: str
    purpose: str
    choice: Choice
    source: str
    evidence: Evidence
    at: datetime | None = None
    """When it takes effect; None: now."""
    event_id: str | None = None
    """None: a new `c-<uuid>`."""
    request_id: str | None = None
    """The request that made it (its audit event's `request_id`); None: the current one."""


@dataclass(frozen=True, slots=True)
class ConsentEventRecord:
    """One event as stored in the ledger."""

    seq: int
    event_id: str
    user_id: str
    purpose: str
    choice: Choice
    at: datetime
    source: str
    policy_version: str | None
    evidence: Evidence
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class LedgerImport:
    """What an import from the lake changed."""

    events_read: int
    events_new: int
    subjects_affected: int


def record_of_row(seq: int, row: dict[str, Any]) -> ConsentEventRecord:
    """The record of an event row written as a dict (the group commit's), numbered `seq`."""
    return ConsentEventRecord(
        seq=seq,
        event_id=row["event_id"],
        user_id=row["user_id"],
        purpose=row["purpose"],
        choice=Choice(row["choice"]),
        at=row["at"],
        source=row["source"],
        policy_version=row["policy_version"],
        evidence=Evidence(
            origin=row["evidence_origin"],
            client=row["evidence_client"],
            shown_version=row["evidence_shown_version"],
        ),
        recorded_at=row["recorded_at"],
    )


def record_of_orm(row: ConsentEventRow) -> ConsentEventRecord:
    """The record of a stored event row."""
    return ConsentEventRecord(
        seq=row.seq,
        event_id=row.event_id,
        user_id=row.user_id,
        purpose=row.purpose,
        choice=Choice(row.choice),
        at=row.at,
        source=row.source,
        policy_version=row.policy_version,
        evidence=Evidence(
            origin=row.evidence_origin,
            client=row.evidence_client,
            shown_version=row.evidence_shown_version,
        ),
        recorded_at=row.recorded_at,
    )
