"""Legal holds: what they cover, when they are active, and their store operations.

A hold names a matter and a reason, and covers one user's data, one entity's access events
or a whole data category. While any covering hold is active, nothing it covers is deleted
or anonymised — not by retention, not by an erasure request (GDPR Art. 17(3)(e): legal
claims). Holds are never deleted; a released hold stays as the record of the matter.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa

from consentry.audit import AuditSink, SqlAuditSink
from consentry.audit.event_types import HoldAdded, HoldReleased
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.instants import rfc3339
from consentry.keys import Keyring
from consentry.policy.model import RETENTION_CATEGORIES
from consentry.store import Store
from consentry.store.models import LegalHold

__all__ = [
    "HOLD_SCOPES",
    "HoldRecord",
    "HoldScope",
    "HoldSet",
    "add_hold",
    "covering_hold",
    "hold_set",
    "list_holds",
    "matter_sha256",
    "release_hold",
]

HoldScope = Literal["user", "entity", "category"]
HOLD_SCOPES: tuple[HoldScope, ...] = ("user", "entity", "category")


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """One legal hold as plain data."""

    id: str
    matter: str
    reason: str
    scope: str
    target: str
    created_at: datetime
    until: datetime | None
    released_at: datetime | None

    def active_at(self, at: datetime) -> bool:
        """Active from `created_at` until `until` or its release (both exclusive)."""
        if at < self.created_at:
            return False
        if self.until is not None and at >= self.until:
            return False
        return self.released_at is None or at < self.released_at

    def state_at(self, at: datetime) -> str:
        """`active`, `released`, `expired` or `pending` (starts later) at `at`."""
        if self.active_at(at):
            return "active"
        if self.released_at is not None and at >= self.released_at:
            return "released"
        if self.until is not None and at >= self.until:
            return "expired"
        return "pending"

    def as_dict(self, at: datetime | None = None) -> dict[str, Any]:
        when = at or datetime.now(UTC)
        return {
            "id": self.id,
            "matter": self.matter,
            "reason": self.reason,
            "scope": self.scope,
            "target": self.target,
            "created_at": rfc3339(self.created_at),
            "until": None if self.until is None else rfc3339(self.until),
            "released_at": None if self.released_at is None else rfc3339(self.released_at),
            "state": self.state_at(when),
        }


def _record(row: LegalHold) -> HoldRecord:
    return HoldRecord(
        id=row.id,
        matter=row.matter,
        reason=row.reason,
        scope=row.scope,
        target=row.target,
        created_at=row.created_at,
        until=row.until,
        released_at=row.released_at,
    )


@dataclass(frozen=True, slots=True)
class HoldSet:
    """The holds active at one instant, indexed by what they cover.

    Where several holds cover the same thing, the smallest hold id is named (plans stay
    deterministic); every active hold is listed in `active`.
    """

    at: datetime
    categories: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    entities: dict[str, str] = field(default_factory=dict)
    active: tuple[HoldRecord, ...] = ()


def hold_set(holds: Iterable[HoldRecord], at: datetime) -> HoldSet:
    """Index the holds active at `at` by category, user and entity (pure)."""
    categories: dict[str, str] = {}
    users: dict[str, str] = {}
    entities: dict[str, str] = {}
    active = tuple(sorted((h for h in holds if h.active_at(at)), key=lambda h: h.id))
    targets = {"category": categories, "user": users, "entity": entities}
    for hold in active:
        targets[hold.scope].setdefault(hold.target, hold.id)
    return HoldSet(at=at, categories=categories, users=users, entities=entities, active=active)


def _problem(field_name: str, message: str) -> BadInput:
    return BadInput(Problem("command line", None, field_name, message))


def matter_sha256(matter: str) -> str:
    """The hash under which a matter appears in the audit log (names stay out of it)."""
    return hashlib.sha256(matter.encode("utf-8")).hexdigest()


def add_hold(
    store: Store,
    keyring: Keyring,
    *,
    matter: str,
    reason: str,
    scope: str,
    target: str,
    until: datetime | None = None,
    now: datetime | None = None,
    audit: AuditSink | None = None,
) -> HoldRecord:
    """Place a hold, with its `hold.added` audit event, in one transaction.

    1. Matter (at most 200 characters) and reason must be non-empty; the scope is `user`,
       `entity` or `category`, and a category must be one of the retention categories.
    2. `until`, when given, must lie after now.
    3. The audit event carries a hash of the matter and a pseudonymous reference of a user
       or entity, never the names themselves.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    matter, reason, target = matter.strip(), reason.strip(), target.strip()
    if not matter or len(matter) > 200:
        raise _problem("--matter", "give the matter's name (1 to 200 characters)")
    if not reason:
        raise _problem("--reason", "give the reason for the hold")
    if scope not in HOLD_SCOPES:
        raise _problem("scope", f"unknown scope {scope!r}; use user, entity or category")
    if not target or len(target) > 128:
        raise _problem(f"--{scope}", "give what the hold covers (1 to 128 characters)")
    if scope == "category" and target not in RETENTION_CATEGORIES:
        raise _problem(
            "--category",
            f"unknown category {target!r}; use one of: " + ", ".join(RETENTION_CATEGORIES),
        )
    if until is not None and until <= now:
        raise _problem("--until", f"{rfc3339(until)} is not in the future")
    row = LegalHold(
        id=f"hold-{secrets.token_hex(6)}",
        matter=matter,
        reason=reason,
        scope=scope,
        target=target,
        created_at=now,
        until=until,
        released_at=None,
    )
    target_ref = target if scope == "category" else keyring.pseudonym(target)
    with store.session() as session:
        session.add(row)
        session.flush()
        (audit or SqlAuditSink()).append(
            session,
            HoldAdded(
                hold_id=row.id,
                matter_sha256=matter_sha256(matter),
                scope=scope,
                target_ref=target_ref,
                until=None if until is None else rfc3339(until),
                at=rfc3339(now),
            ),
        )
        return _record(row)


def release_hold(
    store: Store,
    hold_id: str,
    *,
    now: datetime | None = None,
    audit: AuditSink | None = None,
) -> HoldRecord:
    """Release a hold now, with its `hold.released` audit event.

    An unknown id is bad input; a hold already released (or lapsed) cannot be released
    again (ConsentryError), so the log holds one release per hold.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    with store.session() as session:
        row = session.get(LegalHold, hold_id)
        if row is None:
            raise _problem("HOLD_ID", f"no hold {hold_id!r}")
        record = _record(row)
        if not record.active_at(now):
            raise ConsentryError(f"hold {hold_id} is not active ({record.state_at(now)})")
        row.released_at = now
        (audit or SqlAuditSink()).append(
            session,
            HoldReleased(hold_id=row.id, matter_sha256=matter_sha256(row.matter), at=rfc3339(now)),
        )
        session.flush()
        return _record(row)


def list_holds(store: Store, *, active_at: datetime | None = None) -> list[HoldRecord]:
    """Every hold (or only those active at `active_at`), oldest first."""
    with store.session() as session:
        rows = session.scalars(sa.select(LegalHold).order_by(LegalHold.created_at, LegalHold.id))
        records = [_record(r) for r in rows]
    if active_at is None:
        return records
    return [r for r in records if r.active_at(active_at)]


def covering_hold(
    store: Store,
    *,
    category: str,
    user_id: str | None = None,
    at: datetime | None = None,
) -> HoldRecord | None:
    """The active hold that blocks deleting `user_id`'s data of `category`, or None.

    For other capabilities (erasure requests) that must let holds win: a category hold or
    a hold on the user, whichever has the smallest id.
    """
    at = at or datetime.now(UTC)
    holds = hold_set(list_holds(store, active_at=at), at)
    found = [holds.categories.get(category)]
    if user_id is not None:
        found.append(holds.users.get(user_id))
    ids = sorted(h for h in found if h is not None)
    if not ids:
        return None
    return next(h for h in holds.active if h.id == ids[0])
