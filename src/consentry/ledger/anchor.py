"""Consent events anchored in the audit log: a keyed digest of every event, summed per anchor.

An edited, inserted or deleted row of `consent_events` must be found even though the table
is ordinary SQL that anyone with database access can change. So every event is covered by
an audit event (its *anchor*, a leaf of the signed Merkle log):

1. An event's digest is HMAC-SHA256 under the anchor key (derived from the home's
   pseudonym key, so the log reveals nothing about the events) of its canonical form:
   `event_id`, `user_id`, `purpose`, `choice`, `at` (RFC 3339, 6 digits, Z), `source`,
   `policy_version` (empty when null), joined by U+001F.
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
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

import duckdb
import pyarrow as pa

from consentry.delivery.pseudonyms import hmac_sql

__all__ = [
    "ANCHOR_FIELDS",
    "DIGEST_MODULUS",
    "add_digests",
    "anchor_key",
    "digest_sums_by",
    "event_digest",
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
)
"""The event columns a digest covers, in order."""

DIGEST_MODULUS: Final = 1 << 256
_SEPARATOR: Final = "\x1f"
_LIMBS: Final = 8
"""A digest is summed as eight 32-bit limbs (exact in SQL, carried in Python)."""


def anchor_key(pseudonym_key: bytes) -> bytes:
    """The HMAC key for event digests, derived from the home's pseudonym key (a separate key,
    so a digest never equals a pseudonymous reference elsewhere in the log)."""
    return hmac.new(pseudonym_key, b"consentry.ledger.anchor", hashlib.sha256).digest()


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_digest(
    key: bytes,
    *,
    event_id: str,
    user_id: str,
    purpose: str,
    choice: str,
    at: datetime,
    source: str,
    policy_version: str | None,
) -> int:
    """One event's digest (rule 1), as an integer below 2^256: the reference the SQL kernel
    (`digest_sums_by`) is held to by tests/ledger/test_anchor.py."""
    text = _SEPARATOR.join(
        (event_id, user_id, purpose, choice, _instant(at), source, policy_version or "")
    )
    return int.from_bytes(hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest(), "big")


def add_digests(values: Iterable[int]) -> int:
    """The sum of digests modulo 2^256 (rule 2)."""
    return sum(values) % DIGEST_MODULUS


def subtract_digests(total: int, part: int) -> int:
    """`total` minus `part` modulo 2^256."""
    return (total - part) % DIGEST_MODULUS


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
        text = (
            "concat_ws(chr(31), event_id, user_id, purpose, choice, "
            "strftime(\"at\" AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%S.%fZ'), source, "
            "coalesce(policy_version, ''))"
        )
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
