"""Consent events anchored in the audit log: a keyed digest of every event, summed per anchor.

An edited, inserted or deleted row of `consent_events` must be found even though the table
is ordinary SQL that anyone with database access can change. So every event is covered by
an audit event (its *anchor*, a leaf of the signed Merkle log):

1. An event's digest is HMAC-SHA256 under the anchor key (derived from the home's
   pseudonym key, so the log reveals nothing about the events) of its canonical form: every
   stored column but its row number and its anchor — `event_id`, `user_id`, `purpose`,
   `choice`, `at`, `source`, `policy_version`, `evidence_origin`, `evidence_client`,
   `evidence_shown_version`, `recorded_at` — each written as its UTF-8 length in bytes, `:`
   and its text (instants as RFC 3339 with 6 digits and `Z`), or `-` when null, one after
   the other. Length prefixes make the form injective: no text moved between fields, and
   no null turned empty, gives the same bytes.
2. An anchor's `events_digest` is the sum of its events' digests, each read as a 256-bit
   big-endian integer, modulo 2^256, in 64 hex digits. A sum (not a hash of a list) because
   it is order-free, computed in one vectorised pass, and lets a retention purge that deletes
   or anonymises events say exactly what it took out and put back (two more sums).
3. `consent.changed` anchors one event; `consent.imported` anchors the events an import
   added; `consent.anchored` anchors events recorded before anchoring existed (by
   `consentry init`).
The doctor recomputes every anchor's sum from the rows (docs/invariants.md, I4).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.engine.hmac import hmac_sql
from consentry.store.arrow import select_arrow
from consentry.store.models import ConsentEventRow

__all__ = [
    "ANCHOR_FIELDS",
    "ANCHOR_SCHEMA",
    "DIGEST_MODULUS",
    "add_digests",
    "anchor_key",
    "digest_sums_by",
    "event_digest",
    "event_rows",
    "subtract_digests",
]

ANCHOR_FIELDS: Final = (
    "event_id",
    "user_id",
    "purpose",
    "choice",
    "at",
    "source",
    "policy_version",
    "evidence_origin",
    "evidence_client",
    "evidence_shown_version",
    "recorded_at",
)
"""The event columns a digest covers, in order."""

_INSTANTS: Final = frozenset({"at", "recorded_at"})

ANCHOR_SCHEMA: Final = pa.schema(
    [
        (name, pa.timestamp("us", tz="UTC") if name in _INSTANTS else pa.string())
        for name in ANCHOR_FIELDS
    ]
)
"""The Arrow columns `digest_sums_by` reads."""

DIGEST_MODULUS: Final = 1 << 256
_LIMBS: Final = 8
"""A digest is summed as eight 32-bit limbs (exact in SQL, carried in Python)."""


def anchor_key(pseudonym_key: bytes) -> bytes:
    """The HMAC key for event digests, derived from the home's pseudonym key (a separate key,
    so a digest never equals a pseudonymous reference elsewhere in the log)."""
    return hmac.new(pseudonym_key, b"consentry.ledger.anchor", hashlib.sha256).digest()


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_digest(key: bytes, event: Mapping[str, str | datetime | None]) -> int:
    """One event's digest (rule 1), as an integer below 2^256: the reference the SQL kernel
    (`digest_sums_by`) is held to by tests/ledger/test_anchor.py. `event` maps every
    ANCHOR_FIELDS name to its value."""
    parts = []
    for name in ANCHOR_FIELDS:
        value = event[name]
        if value is None:
            parts.append("-")
            continue
        text = _instant(value) if isinstance(value, datetime) else value
        parts.append(f"{len(text.encode('utf-8'))}:{text}")
    text = "".join(parts)
    return int.from_bytes(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest(), "big")


def event_rows(session: Session, *where: Any) -> pa.Table:
    """The ledger's events matching `where` with every column a digest covers (and
    `anchor_seq`), as Arrow, streamed in batches."""
    columns = [getattr(ConsentEventRow, name) for name in ANCHOR_FIELDS]
    query = sa.select(*columns, ConsentEventRow.anchor_seq).where(*where)
    return select_arrow(session, query, ANCHOR_SCHEMA.append(pa.field("anchor_seq", pa.int64())))


def add_digests(values: Iterable[int]) -> int:
    """The sum of digests modulo 2^256 (rule 2)."""
    return sum(values) % DIGEST_MODULUS


def subtract_digests(total: int, part: int) -> int:
    """`total` minus `part` modulo 2^256."""
    return (total - part) % DIGEST_MODULUS


def _canonical_sql(name: str) -> str:
    """One field of rule 1 in DuckDB SQL: `-` for null, else byte length, `:`, text."""
    text = f'"{name}"'
    if name in _INSTANTS:
        text = f"strftime({text} AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ')"
    return f"CASE WHEN {text} IS NULL THEN '-' ELSE strlen({text})::VARCHAR || ':' || {text} END"


def digest_sums_by(key: bytes, events: pa.Table, group: str | None) -> dict[int | None, int]:
    """Per value of column `group` (or overall for None), the sum of the events' digests.

    Implements rules 1 and 2 in DuckDB: the HMAC of each canonical form is computed in the
    engine, its 64 hex digits cut into eight 32-bit limbs that are summed exactly (HUGEINT),
    and the limbs are carried into one integer modulo 2^256 here. `events` needs the
    ANCHOR_FIELDS columns (`at` a UTC timestamp) and `group` if given.
    """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("anchor_events", events)
        text = " || ".join(_canonical_sql(n) for n in ANCHOR_FIELDS)
        digest = hmac_sql("canonical", key, "duckdb")
        limbs = ", ".join(
            f"sum(('0x' || substr(digest, {1 + 8 * i}, 8))::UBIGINT)::HUGEINT AS l{i}"
            for i in range(_LIMBS)
        )
        key_column = "NULL" if group is None else f'"{group}"'
        rows = con.execute(
            f"SELECT grp, {limbs} FROM (SELECT {key_column} AS grp, {digest} AS digest "
            f"FROM (SELECT *, {text} AS canonical FROM anchor_events)) GROUP BY grp"
        ).fetchall()
    finally:
        con.close()
    sums: dict[int | None, int] = {}
    for row in rows:
        total = 0
        for limb in row[1:]:
            total = (total << 32) + int(limb)
        sums[None if row[0] is None else int(row[0])] = total % DIGEST_MODULUS
    return sums
