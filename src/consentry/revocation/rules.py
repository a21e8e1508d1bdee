"""The pure rules of revocations: reasons, deadlines, states, feed cursors and receipts.

Nothing here reads a store or a lake; the job, the log and the API feed it plain values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts
from consentry.delivery.eligibility import REASON_ORDER
from consentry.errors import BadInput, Problem
from consentry.policy import PolicyFile

__all__ = [
    "MAX_PAGE",
    "MAX_RECEIPT_IDS",
    "RECORD_ID",
    "REVOCATION_REASONS",
    "Cursor",
    "ExtraReason",
    "RevocationStatus",
    "decode_cursor",
    "denial_started",
    "due_at",
    "encode_cursor",
    "lines_digest",
    "lines_digest_arrow",
    "parse_receipt_ids",
    "status_of",
]

MAX_PAGE: Final = 1000
"""The most revocations one feed page holds."""
MAX_RECEIPT_IDS: Final = 10_000
"""The most record ids one receipt batch may carry."""
RECORD_ID: Final = re.compile(r"[0-9a-f]{64}")
"""A delivered record id: HMAC-SHA256 in lower-case hex."""


class ExtraReason(StrEnum):
    """Reasons beyond the delivery's eligibility codes: the post is gone from the lake."""

    RETENTION_PURGED = "retention_purged"
    """The retention engine purged the post (logged by `revoke_purged`)."""
    POST_REMOVED = "post_removed"
    """The post left the lake with no recorded purge (a purge logged later overrides it)."""


REVOCATION_REASONS: tuple[str, ...] = (
    *(r.value for r in REASON_ORDER),
    *(r.value for r in ExtraReason),
)
"""Every reason a revocation may carry."""


class RevocationStatus(StrEnum):
    """Where a revocation stands for its licensee."""

    PENDING = "pending"
    """No receipt yet, deadline ahead."""
    OVERDUE = "overdue"
    """No receipt and the deadline has passed."""
    CONFIRMED = "confirmed"
    """The licensee confirmed the deletion."""


def denial_started(events: Iterable[tuple[datetime, str]], at: datetime) -> datetime | None:
    """When an author's current refusal of a purpose began, as of `at` (the `since` of a
    revocation for denied consent).

    1. Only the author's events for the purpose at or before `at` count.
    2. The current run of denials is the deny events strictly after the last allow event
       (all deny events when there is no allow).
    3. Its start is the earliest of them; None when the run is empty (the latest choice is
       allow, or there are no events), and the decision's own `since` is used instead.
    The revocation job evaluates this in SQL for every author at once (`DENIAL_STARTS` in
    `consentry.revocation.job`), held to this function by
    test_denial_starts_sql_is_the_rule (tests/revocation/test_rules.py).
    """
    counted = [(t, choice) for t, choice in events if t <= at]
    last_allow = max((t for t, choice in counted if choice == "allow"), default=None)
    run = [
        t for t, choice in counted if choice == "deny" and (last_allow is None or t > last_allow)
    ]
    return min(run, default=None)


def due_at(policy: PolicyFile, revoked_at: datetime) -> datetime:
    """When a receipt is due: revoked_at plus the SLA in force at revoked_at."""
    return policy.revocation_sla_at(revoked_at).add_to(revoked_at.astimezone(UTC))


def status_of(confirmed_at: datetime | None, due: datetime, now: datetime) -> RevocationStatus:
    """1. A receipt confirms it (even a late one). 2. Otherwise overdue once `now > due`.
    3. Otherwise pending."""
    if confirmed_at is not None:
        return RevocationStatus.CONFIRMED
    return RevocationStatus.OVERDUE if now > due else RevocationStatus.PENDING


def lines_digest(lines: Iterable[str]) -> str:
    """SHA-256 (hex) over the sorted lines joined by newlines (order-independent)."""
    return hashlib.sha256("\n".join(sorted(lines)).encode("utf-8")).hexdigest()


def lines_digest_arrow(lines: pa.Array | pa.ChunkedArray) -> str:
    """`lines_digest` of an Arrow array of strings, sorted by Arrow.

    Arrow sorts strings by their UTF-8 bytes, which is code point order, the order
    Python's `sorted` gives, so the digest is the same as `lines_digest`'s.
    """
    if len(lines) == 0:
        return lines_digest([])
    ordered = pc.take(lines, pc.sort_indices(lines))
    if isinstance(ordered, pa.ChunkedArray):
        ordered = ordered.combine_chunks()
    # Each line with its newline, then the one contiguous data buffer hashed without the
    # last newline: no Python string per line.
    wide = pa.large_string()
    ended = pc.binary_join_element_wise(
        ordered.cast(wide), pa.scalar("\n", wide), pa.scalar("", wide)
    )
    _, data = binary_parts(ended)
    return hashlib.sha256(data[:-1]).hexdigest()


# -- feed cursors ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in one licensee's revocation feed: everything up to `seq` was served."""

    licensee_id: str
    seq: int


_CURSOR_VERSION: Final = 1
_CURSOR_TAG_BYTES: Final = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, b"consentry revocation cursor v1:" + body, hashlib.sha256).digest()[
        :_CURSOR_TAG_BYTES
    ]


def encode_cursor(cursor: Cursor, key: bytes) -> str:
    """An opaque token: base64url of a small JSON body and a truncated HMAC over it, so a
    client cannot forge a position nor move a cursor to another licensee."""
    body = json.dumps(
        {"v": _CURSOR_VERSION, "l": cursor.licensee_id, "s": cursor.seq}, separators=(",", ":")
    ).encode("utf-8")
    return _b64(body + _tag(key, body))


def _bad_cursor(message: str) -> BadInput:
    return BadInput(Problem("query", None, "cursor", message))


def decode_cursor(token: str, key: bytes, licensee_id: str) -> Cursor:
    """The position `token` names for `licensee_id`.

    1. An empty token is the start of the feed (seq 0).
    2. The token must be base64url of a body and its 16-byte tag; the tag must verify
       under `key`; the body must be version 1 JSON with a licensee id and a seq >= 0.
    3. A cursor issued to another licensee is refused.
    Every refusal is BadInput with a message saying which check failed.
    """
    if token == "":
        return Cursor(licensee_id, 0)
    if len(token) > 512 or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise _bad_cursor("not a cursor: use the next_cursor of an earlier page, or none")
    try:
        raw = _unb64(token)
    except (binascii.Error, ValueError):
        raise _bad_cursor("not a cursor: it is not base64url") from None
    body, tag = raw[:-_CURSOR_TAG_BYTES], raw[-_CURSOR_TAG_BYTES:]
    if len(raw) <= _CURSOR_TAG_BYTES or not hmac.compare_digest(tag, _tag(key, body)):
        raise _bad_cursor("not a cursor issued by this server (it was altered or truncated)")
    try:
        fields: Any = json.loads(body)
    except ValueError:
        raise _bad_cursor("not a cursor: its body is not JSON") from None
    if (
        not isinstance(fields, dict)
        or fields.get("v") != _CURSOR_VERSION
        or not isinstance(fields.get("l"), str)
        or not isinstance(fields.get("s"), int)
        or isinstance(fields.get("s"), bool)
        or fields["s"] < 0
    ):
        raise _bad_cursor("not a cursor of this feed version")
    if fields["l"] != licensee_id:
        raise _bad_cursor("this cursor belongs to another licensee's feed")
    return Cursor(licensee_id, int(fields["s"]))


# -- receipts --------------------------------------------------------------------------------


def parse_receipt_ids(values: Any, *, location: str = "request body") -> list[str]:
    """The distinct record ids of a receipt batch, in first-seen order.

    1. A list of 1..MAX_RECEIPT_IDS strings.
    2. Each a record id: 64 lower-case hex digits (as delivered).
    3. Anything else is BadInput naming every offending position; nothing is accepted.
    """
    if not isinstance(values, list) or not values:
        raise BadInput(Problem(location, None, "record_ids", "give a non-empty list of record ids"))
    if len(values) > MAX_RECEIPT_IDS:
        raise BadInput(
            Problem(location, None, "record_ids", f"at most {MAX_RECEIPT_IDS:,} record ids a batch")
        )
    problems = [
        Problem(
            location,
            None,
            f"record_ids[{i}]",
            "not a record id (64 lower-case hex digits, as in the delivered files)",
        )
        for i, value in enumerate(values)
        if not isinstance(value, str) or not RECORD_ID.fullmatch(value)
    ]
    if problems:
        raise BadInput(problems[:20])
    return list(dict.fromkeys(values))
