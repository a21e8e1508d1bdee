"""The control-plane tables, as SQLAlchemy 2 typed declarative models.

Alembic migrations in `consentry/store/migrations/versions/` create these tables; a test
checks that autogenerate finds no difference between the models and the migrated schema on
SQLite and PostgreSQL, so every change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NAMING_CONVENTION",
    "AuditCheckpointRow",
    "AuditEventRow",
    "AuditHeadRow",
    "AuditLeafRow",
    "Base",
    "ConsentEventRow",
    "ConsentStateRow",
    "DeliveryRow",
    "ImportRun",
    "JobLockRow",
    "JobRow",
    "LegalHold",
    "Licensee",
    "RetentionPurge",
    "RevocationRow",
    "ScrapingAssessmentRow",
    "StoreMeta",
    "Subject",
    "UtcDateTime",
    "WebSessionRow",
]

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names are derived, never left to the backend, so later migrations can drop
or alter them by name on SQLite (batch mode) and PostgreSQL alike."""


class UtcDateTime(sa.TypeDecorator[datetime]):
    """An instant stored in UTC and always returned timezone-aware (UTC).

    1. Binding a naive datetime raises ValueError: an instant without an offset is ambiguous.
    2. Aware values are converted to UTC. PostgreSQL stores them as `timestamptz`;
       SQLite (no time-zone type) stores the UTC wall time without offset.
    3. Values read back get `tzinfo=UTC` (SQLite) or are converted to UTC (PostgreSQL
       returns them in the session's time zone).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} has no time zone; use UTC")
        utc = value.astimezone(UTC)
        # SQLite's DATETIME storage format has no offset; store the UTC wall time.
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every control-plane model (shared metadata and naming)."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class ImportRun(Base):
    """One import of rows into a canonical lake table (what, from where, how many, when)."""

    __tablename__ = "import_runs"
    __table_args__ = (
        sa.CheckConstraint(
            "rows_read >= 0 AND rows_new >= 0 AND rows_total >= 0", name="rows_non_negative"
        ),
        sa.CheckConstraint("finished_at >= started_at", name="finished_after_started"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    table_name: Mapped[str] = mapped_column(sa.String(64))
    origin: Mapped[str] = mapped_column(sa.Text)
    rows_read: Mapped[int] = mapped_column(sa.BigInteger)
    rows_new: Mapped[int] = mapped_column(sa.BigInteger)
    rows_total: Mapped[int] = mapped_column(sa.BigInteger)
    # Indexed: `recent_imports` reads the newest runs first.
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StoreMeta(Base):
    """Facts about the store itself, one key/value row each (see docs/store.md)."""

    __tablename__ = "store_meta"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class Subject(Base):
    """A platform user as consent resolution sees them (synced from the lake's `users`)."""

    __tablename__ = "subjects"

    user_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    region: Mapped[str | None] = mapped_column(sa.String(2))
    birth_date: Mapped[date | None] = mapped_column(sa.Date)
    protected: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deactivated_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ConsentEventRow(Base):
    """One consent choice, append-only: never updated, never deleted by the application.

    `seq` is the order of recording (stable history, export watermark); `event_id` is the
    caller's or importer's id and breaks ties between events at the same instant.
    """

    __tablename__ = "consent_events"
    __table_args__ = (
        sa.CheckConstraint("choice IN ('allow', 'deny')", name="choice_known"),
        sa.CheckConstraint(
            "source IN ('settings', 'gpc', 'api', 'import', 'support')", name="source_known"
        ),
        sa.Index("ix_consent_events_user_purpose_at", "user_id", "purpose", "at"),
    )

    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[str] = mapped_column(sa.String(128))
    purpose: Mapped[str] = mapped_column(sa.String(64))
    choice: Mapped[str] = mapped_column(sa.String(5))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(sa.String(16))
    policy_version: Mapped[str | None] = mapped_column(sa.String(64))
    evidence_origin: Mapped[str | None] = mapped_column(sa.String(255))
    evidence_client: Mapped[str | None] = mapped_column(sa.String(32))
    evidence_shown_version: Mapped[str | None] = mapped_column(sa.String(64))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    anchor_seq: Mapped[int | None] = mapped_column(sa.BigInteger, index=True)
    """The audit event that anchors this event in the Merkle log (`consent.changed` for one
    choice, `consent.imported` for an import): its `events_digest` covers this row's
    content (docs/invariants.md). Null only for events recorded before anchoring existed
    and not yet anchored by `consentry init`."""


class ConsentStateRow(Base):
    """The current state: the latest event per (user, purpose) by instant, then event_id."""

    __tablename__ = "consent_state"

    user_id: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    purpose: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    choice: Mapped[str] = mapped_column(sa.String(5))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    source: Mapped[str] = mapped_column(sa.String(16))
    event_id: Mapped[str] = mapped_column(sa.String(64))


class AuditEventRow(Base):
    """One audit event (schema in docs/audit.md). Holds no personal data: pseudonymous
    references, hashes and counts only."""

    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_type: Mapped[str] = mapped_column(sa.String(64), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    payload: Mapped[str] = mapped_column(sa.Text)
    """Canonical JSON (sorted keys, no whitespace) of the event's fields."""


class Licensee(Base):
    """An AI developer licensed to receive deliveries for one purpose (docs/licensees.md).

    Never deleted: a licensee is disabled (`disabled_at`), which is final. Its
    pseudonymisation secret is stored only sealed (AES-256-GCM under the master key, the id
    as associated data) and its API key only as a keyed hash.
    """

    __tablename__ = "licensees"
    __table_args__ = (
        sa.CheckConstraint(
            "period_from IS NULL OR period_to IS NULL OR period_from < period_to",
            name="period_ordered",
        ),
        sa.CheckConstraint(
            "disabled_at IS NULL OR disabled_at >= created_at", name="disabled_after_created"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    purpose: Mapped[str] = mapped_column(sa.String(64))
    regions: Mapped[list[str]] = mapped_column(sa.JSON)
    """Region codes or groups in scope as given (`EU`, `US`); empty: everywhere."""
    exclude_regions: Mapped[list[str]] = mapped_column(sa.JSON)
    languages: Mapped[list[str]] = mapped_column(sa.JSON)
    """Lower-case BCP 47 tags in scope; empty: every language."""
    minimise: Mapped[list[str]] = mapped_column(sa.JSON)
    """Kinds of identifier replaced in delivered texts (`consentry.delivery.minimise.KINDS`)."""
    period_from: Mapped[datetime | None] = mapped_column(UtcDateTime)
    period_to: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    disabled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    sealed_secret: Mapped[bytes] = mapped_column(sa.LargeBinary)
    """12-byte AES-GCM nonce followed by the ciphertext and tag of the 32-byte secret."""
    master_key_id: Mapped[str] = mapped_column(sa.String(16))
    """Fingerprint of the master key that sealed the secret (`consentry.keys.master_key_id`)."""
    api_key_hash: Mapped[str] = mapped_column(sa.String(64))
    """HMAC-SHA256 (hex) of the API key under a key derived from the master key."""
    api_key_prefix: Mapped[str] = mapped_column(sa.String(40))
    """The API key's first characters, to recognise it in lists (not enough to use it)."""


# --- revocations: models below this line -------------------------------------------


class RevocationRow(Base):
    """One revocation in the log: a delivered record the licensee must delete.

    One row per (licensee, record, carrying delivery): a record revoked once is logged once,
    unless a later delivery carried it again. `seq` orders each licensee's feed (writers of
    one licensee are serialised, so seq order is commit order). Never deleted; a receipt
    only sets `confirmed_at` and `receipt_id`.
    """

    __tablename__ = "revocations"
    __table_args__ = (
        sa.UniqueConstraint("licensee_id", "record_id", "delivery_id"),
        sa.Index("ix_revocations_licensee_seq", "licensee_id", "seq"),
        sa.CheckConstraint("due_at >= revoked_at", name="due_after_revoked"),
    )

    seq: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    licensee_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("licensees.id"))
    record_id: Mapped[str] = mapped_column(sa.String(64))
    """The record's id as the licensee knows it (HMAC of the post id under its secret)."""
    delivery_id: Mapped[str] = mapped_column(sa.String(64))
    """The latest delivery that carried the record when it was revoked."""
    delivery_ids: Mapped[list[str]] = mapped_column(sa.JSON)
    """Every delivery that had carried it by then, oldest first."""
    author_id: Mapped[str] = mapped_column(sa.String(128), index=True)
    reason: Mapped[str] = mapped_column(sa.String(32))
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    """revoked_at + the policy's `revocation_sla` in force at revoked_at."""
    run_id: Mapped[str] = mapped_column(sa.String(64))
    confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    receipt_id: Mapped[str | None] = mapped_column(sa.String(40))


# --- retention: models below this line ---------------------------------------------


class LegalHold(Base):
    """A legal hold (docs/retention.md): while active it blocks deletion of what it covers.

    `scope` says what it covers: one user's data (`user`), one entity's access events
    (`entity`) or a whole data category (`category`); `target` is that user id, entity or
    category. Active from `created_at` until `until` (exclusive) or its release, whichever
    comes first. Never deleted: a released hold stays as the record of the matter.
    """

    __tablename__ = "legal_holds"
    __table_args__ = (
        sa.CheckConstraint("scope IN ('user', 'entity', 'category')", name="scope_known"),
        sa.CheckConstraint("until IS NULL OR until > created_at", name="until_after_created"),
        sa.CheckConstraint(
            "released_at IS NULL OR released_at >= created_at", name="released_after_created"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    matter: Mapped[str] = mapped_column(sa.String(200))
    reason: Mapped[str] = mapped_column(sa.Text)
    scope: Mapped[str] = mapped_column(sa.String(16))
    target: Mapped[str] = mapped_column(sa.String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RetentionPurge(Base):
    """One execution of a retention plan and its state: planned -> applied -> verified.

    `planned` holds the plan's per-category counts, `results` what was changed in each store,
    `evidence` the re-query of every store after the change (counts only, no ids).
    """

    __tablename__ = "retention_purges"
    __table_args__ = (
        sa.CheckConstraint("state IN ('planned', 'applied', 'verified')", name="state_known"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    plan_sha256: Mapped[str] = mapped_column(sa.String(64))
    policy_version: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    state: Mapped[str] = mapped_column(sa.String(16))
    planned_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    applied_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    planned: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    results: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)


# --- audit log: models below this line ---------------------------------------------


class AuditLeafRow(Base):
    """An audit event's place in the Merkle log (docs/audit.md): one leaf per event.

    `leaf_index` is gap-free and assigned under the log's lock, in `event_seq` order;
    `subtree_hashes` holds the complete subtrees this leaf completed (levels 1 and up), so
    proofs read O(log n) rows and never rehash the log.
    """

    __tablename__ = "audit_leaves"

    leaf_index: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    event_seq: Mapped[int] = mapped_column(
        sa.BigInteger, sa.ForeignKey("audit_events.seq"), unique=True
    )
    leaf_hash: Mapped[bytes] = mapped_column(sa.LargeBinary)
    """SHA-256(0x00 || entry), the RFC 9162 leaf hash of the event's entry bytes."""
    subtree_hashes: Mapped[bytes] = mapped_column(sa.LargeBinary)
    """32 bytes per complete subtree ending at this leaf, level 1 first (often empty)."""


class AuditHeadRow(Base):
    """The log's head (one row, id 1): its size and frontier. Appends lock this row."""

    __tablename__ = "audit_head"
    __table_args__ = (sa.CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    frontier: Mapped[bytes] = mapped_column(sa.LargeBinary)
    """The hashes of the complete subtrees the tree ends in, largest first."""


class AuditCheckpointRow(Base):
    """A signed checkpoint of the log (origin, size, root hash; Ed25519 signed note)."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    origin: Mapped[str] = mapped_column(sa.String(128))
    size: Mapped[int] = mapped_column(sa.BigInteger)
    root_hash: Mapped[bytes] = mapped_column(sa.LargeBinary)
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    note: Mapped[str] = mapped_column(sa.Text)
    """The signed note exactly as published (checkpoint body, blank line, signature)."""


# --- scraping: models below this line ----------------------------------------------


class ScrapingAssessmentRow(Base):
    """One recorded scraping assessment (`consentry scraping assess`): what was billed.

    `summary` holds the billed entities' windows and the top entities' hourly rolling
    series for the console; the full result is `result_sha256` (canonical JSON) and the
    file `<home>/scraping/assessments/<id>.json`.
    """

    __tablename__ = "scraping_assessments"
    __table_args__ = (
        sa.CheckConstraint(
            "accesses >= 0 AND entities >= 0 AND billed_entities >= 0", name="counts_non_negative"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    # Indexed: the console reads the newest assessment.
    assessed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    policy_version: Mapped[str] = mapped_column(sa.String(64))
    mode: Mapped[str] = mapped_column(sa.String(16))
    rounding: Mapped[str] = mapped_column(sa.String(32))
    engine: Mapped[str] = mapped_column(sa.String(16))
    accesses: Mapped[int] = mapped_column(sa.BigInteger)
    entities: Mapped[int] = mapped_column(sa.BigInteger)
    billed_entities: Mapped[int] = mapped_column(sa.Integer)
    total_amount: Mapped[str] = mapped_column(sa.String(32))
    currency: Mapped[str] = mapped_column(sa.String(3))
    result_sha256: Mapped[str] = mapped_column(sa.String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


# --- jobs, deliveries: models below this line --------------------------------------------------


class JobRow(Base):
    """One multi-step job (import, delivery, revocation run, retention apply, assessment):
    its intent, the last step it reached and how it ended (docs/invariants.md).

    `running` jobs have changed nothing visible yet and are rolled back if their process
    dies; `committed` jobs made their result visible (with its audit event) and are rolled
    forward; `done` and `rolled_back` are final.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        sa.CheckConstraint(
            "state IN ('running', 'committed', 'done', 'rolled_back')", name="state_known"
        ),
        sa.Index("ix_jobs_state", "state"),
    )

    id: Mapped[str] = mapped_column(sa.String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    subject: Mapped[str] = mapped_column(sa.String(255))
    """What the job works on: a table, a licensee, a plan hash."""
    state: Mapped[str] = mapped_column(sa.String(16))
    step: Mapped[str] = mapped_column(sa.String(64))
    """The last named step the job reached."""
    intent: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    """What recovery needs to finish or undo the job (staging names, ids, counts)."""
    owner: Mapped[str] = mapped_column(sa.String(255))
    """host:pid of the process that ran it (for people; liveness is its lock file)."""
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    outcome: Mapped[str | None] = mapped_column(sa.Text)
    """How it ended: `ok`, `recovered: …`, or the error that stopped it."""


class JobLockRow(Base):
    """A named lock held by a job until it ends (one delivery per licensee at a time, one
    writer per lake table). The primary key makes a second holder impossible."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(40), sa.ForeignKey("jobs.id"), index=True)
    taken_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeliveryRow(Base):
    """A delivery that exists: listed, served and revocable only once this row is committed,
    in the same transaction as its `delivery.built` audit event."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.CheckConstraint("delivered >= 0 AND considered >= delivered", name="counts_ordered"),
        sa.Index("ix_deliveries_licensee_created", "licensee_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    licensee_id: Mapped[str] = mapped_column(sa.String(32), sa.ForeignKey("licensees.id"))
    purpose: Mapped[str] = mapped_column(sa.String(64))
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    policy_version: Mapped[str | None] = mapped_column(sa.String(64))
    considered: Mapped[int] = mapped_column(sa.BigInteger)
    delivered: Mapped[int] = mapped_column(sa.BigInteger)
    manifest_sha256: Mapped[str] = mapped_column(sa.String(64))
    audit_seq: Mapped[int] = mapped_column(sa.BigInteger)
    """The `delivery.built` audit event recorded with it."""
    purged_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """When a retention purge removed it (its directory and lineage are gone)."""
    purge_id: Mapped[str | None] = mapped_column(sa.String(32))


# --- web sessions: models below this line ---------------------------------------------------


class WebSessionRow(Base):
    """A signed-in browser session, kept server-side so that signing out ends it.

    The session cookie carries a random 256-bit token; the store keeps only its SHA-256
    (`id`), so a copy of this table opens no session. A session speaks for `subject` in
    `role` from `created_at` until `expires_at` (an admin session: never past its token's
    expiry) unless `ended_at` (sign-out) comes first.
    """

    __tablename__ = "web_sessions"
    __table_args__ = (
        sa.CheckConstraint("role IN ('user', 'admin')", name="role_known"),
        sa.CheckConstraint("expires_at > created_at", name="expires_after_creation"),
    )

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    """SHA-256 (hex) of the cookie's token."""
    subject: Mapped[str] = mapped_column(sa.String(128))
    role: Mapped[str] = mapped_column(sa.String(8))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Indexed: expired sessions are swept by their expiry.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
