"""Audit events: a stable, documented schema per event type, appended to the control plane.

Events never hold personal data: users appear only as pseudonymous references
(`Keyring.pseudonym`), everything else is a key, a count, a hash or an instant. Payloads are
stored as RFC 8785 canonical JSON (`entry_json`) so they are hashed into the Merkle log byte
for byte and any JCS implementation reproduces them. Each type is a dataclass in
`consentry.audit.event_types`, from which docs/audit.md's sections are generated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

import rfc8785
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit.event_types import AUDIT_EVENT_CLASSES, AuditPayload
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
    event_type: tuple(f.name for f in fields(cls))  # type: ignore[arg-type]
    for event_type, cls in AUDIT_EVENT_CLASSES.items()
}
"""Event type -> the payload fields it always carries (and, but for `ENVELOPE_FIELDS`,
nothing else), from its class in `consentry.audit.event_types`."""

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

    def append(self, session: Session, event: AuditPayload) -> int: ...


def envelope(event: AuditPayload, request_id: str | None = None) -> dict[str, Any]:
    """The event's payload as appended: its fields, plus `request_id` (the given one, else
    the current request's, if any)."""
    payload = event.payload()
    found = request_id or current_request_id()
    return {**payload, "request_id": found} if found else payload


class SqlAuditSink:
    """Appends to the store's `audit_events` table inside the caller's transaction, so an
    audited change and its audit event commit or roll back together."""

    def append(self, session: Session, event: AuditPayload) -> int:
        """Append `event` (an instance of its type's class, so it carries exactly its
        documented fields) and return its sequence number (its position in the log).

        1. The payload is the event's fields plus the envelope (`envelope`: the request id).
        2. `at` is the instant of appending (UTC).
        3. The event becomes the next leaf of the Merkle log, under the log's lock.
        """
        return append_events(session, [(event.event_type, entry_json(envelope(event)))])[0]

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
