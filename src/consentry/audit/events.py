"""Audit events: a stable, documented schema per event type, appended to the control plane.

Events never hold personal data: users appear only as pseudonymous references
(`Keyring.pseudonym`), everything else is a key, a count, a hash or an instant. Payloads are
stored as RFC 8785 canonical JSON (`entry_json`) so they are hashed into the Merkle log byte
for byte and any JCS implementation reproduces them. docs/audit.md documents every type (a
test enforces it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import rfc8785
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit.log import append_events
from consentry.observe.context import current_request_id
from consentry.store.models import AuditEventRow

__all__ = [
    "AUDIT_EVENT_TYPES",
    "ENVELOPE_FIELDS",
    "AuditEvent",
    "AuditSink",
    "SqlAuditSink",
    "canonical_json",
    "entry_json",
    "envelope",
]

AUDIT_EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "consent.changed": (
        "subject_ref",
        "purpose",
        "choice",
        "source",
        "policy_version",
        "at",
        "ledger_seq",
        "events_digest",
    ),
    "consent.imported": (
        "events_read",
        "events_new",
        "subjects_affected",
        "digest_sha256",
        "events_digest",
    ),
    "consent.anchored": ("events", "events_digest"),
    "subjects.synced": ("subjects_read", "subjects_new", "subjects_updated", "digest_sha256"),
    "table.imported": (
        "table",
        "run_id",
        "rows_read",
        "rows_new",
        "rows_replaced",
        "rows_total",
        "snapshot",
    ),
    "delivery.built": (
        "delivery_id",
        "licensee_id",
        "purpose",
        "as_of",
        "policy_version",
        "considered",
        "delivered",
        "manifest_sha256",
    ),
    "licensee.changed": (
        "licensee_id",
        "name",
        "change",
        "purpose",
        "regions",
        "exclude_regions",
        "languages",
        "period_from",
        "period_to",
        "api_key_hash_prefix",
        "at",
    ),
    # --- revocations ---
    "revocation.issued": (
        "run_id",
        "licensee_id",
        "trigger",
        "as_of",
        "lineage_rows",
        "revoked",
        "new",
        "digest_sha256",
    ),
    "revocation.confirmed": (
        "receipt_id",
        "licensee_id",
        "records",
        "confirmed",
        "already_confirmed",
        "unknown",
        "digest_sha256",
    ),
    # --- retention ---
    "hold.added": ("hold_id", "matter_sha256", "scope", "target_ref", "until", "at"),
    "hold.released": ("hold_id", "matter_sha256", "at"),
    "retention.planned": (
        "purge_id",
        "plan_sha256",
        "policy_version",
        "at",
        "to_delete",
        "to_anonymise",
        "held",
        "gaps",
    ),
    "retention.applied": (
        "purge_id",
        "plan_sha256",
        "deleted",
        "anonymised",
        "delivery_dirs_removed",
        "revocations",
        "consent_anchor_removed",
        "consent_anchor_added",
    ),
    "retention.verified": ("purge_id", "plan_sha256", "remaining", "checked", "ok"),
    # --- scraping ---
    "scraping.assessed": (
        "assessment_id",
        "policy_version",
        "mode",
        "rounding",
        "engine",
        "accesses",
        "entities",
        "billed_entities",
        "billed_windows",
        "total_amount",
        "currency",
        "result_sha256",
    ),
    # --- audit log and policy history ---
    "policy.published": (
        "version",
        "effective_from",
        "version_sha256",
        "file_sha256",
        "previous_version",
        "changes",
        "purposes",
    ),
}
"""Event type -> the payload fields it always carries (and, but for `ENVELOPE_FIELDS`,
nothing else)."""

ENVELOPE_FIELDS: tuple[str, ...] = ("request_id",)
"""Optional fields any event may carry besides its type's (docs/audit.md, "Envelope"):
`request_id`, the request or CLI invocation that caused it. Events written before these
existed simply lack them; nothing about the leaf format changes, so old logs verify."""


def canonical_json(payload: Mapping[str, Any]) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 kept as is (the digests of plans,
    assessments and feed pages; audit payloads use `entry_json`)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_json(payload: Mapping[str, Any]) -> str:
    """RFC 8785 (JSON Canonicalization Scheme) text of an audit payload.

    1. Keys sorted by UTF-16 code units, no insignificant whitespace, strings with only the
       escapes JCS requires, UTF-8 kept as is; numbers as ECMAScript writes them.
    2. For every payload the log writes (strings, lists of strings, booleans, null and
       integers below 2^53) this is byte for byte what the earlier definition gave
       (`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`), so old
       and new leaves are one entry format (tests/audit/test_entry_bytes.py checks it).
    3. What JCS cannot represent exactly (an integer of 2^53 or more, a lone surrogate) is
       refused (ValueError) rather than written in another form.
    """
    try:
        return rfc8785.dumps(dict(payload)).decode("utf-8")
    except rfc8785.CanonicalizationError as exc:
        raise ValueError(f"not representable in RFC 8785 JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit event as read back from the log."""

    seq: int
    event_type: str
    at: datetime
    payload: dict[str, Any]


class AuditSink(Protocol):
    """Where capabilities append audit events."""

    def append(self, session: Session, event_type: str, payload: Mapping[str, Any]) -> int: ...


def envelope(
    event_type: str, payload: Mapping[str, Any], request_id: str | None = None
) -> dict[str, Any]:
    """The payload as appended: checked to carry exactly its type's fields, plus
    `request_id` (the given one, else the current request's, if any)."""
    fields = AUDIT_EVENT_TYPES.get(event_type)
    if fields is None:
        raise ValueError(f"unknown audit event type {event_type!r}")
    if set(payload) != set(fields):
        raise ValueError(f"{event_type} carries exactly {sorted(fields)}, got {sorted(payload)}")
    found = request_id or current_request_id()
    return {**payload, "request_id": found} if found else dict(payload)


class SqlAuditSink:
    """Appends to the store's `audit_events` table inside the caller's transaction, so an
    audited change and its audit event commit or roll back together."""

    def append(self, session: Session, event_type: str, payload: Mapping[str, Any]) -> int:
        """Validate the payload against the documented schema and append it.

        1. The type must be one of AUDIT_EVENT_TYPES, with exactly its fields (`envelope`
           adds the request id, see `envelope`).
        2. `at` is the instant of appending (UTC).
        3. Returns the event's sequence number (its position in the log).
        """
        # 4. The event becomes the next leaf of the Merkle log, under the log's lock.
        return append_events(session, [(event_type, entry_json(envelope(event_type, payload)))])[0]

    @staticmethod
    def read(session: Session, *, event_type: str | None = None) -> list[AuditEvent]:
        """Every event (of one type if given), in log order."""
        query = sa.select(AuditEventRow).order_by(AuditEventRow.seq)
        if event_type is not None:
            query = query.where(AuditEventRow.event_type == event_type)
        return [
            AuditEvent(seq=r.seq, event_type=r.event_type, at=r.at, payload=json.loads(r.payload))
            for r in session.scalars(query)
        ]
