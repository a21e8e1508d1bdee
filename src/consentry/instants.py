"""Instants as people and programs write them: one parser and one accepted range for the CLI,
the API, the meter and every import.

Every instant and date Consentry accepts lies in one documented range (docs/settings.md,
"Accepted ranges"): from 1900-01-01T00:00:00Z inclusive to 2200-01-01T00:00:00Z exclusive.
The range is wide enough for any birth date and any post, and narrow enough that adding any
duration the policy can express (years of retention, a revocation SLA, a 24-hour window) to an
accepted instant, or writing it with any UTC offset, can never overflow a Python `datetime`,
a DuckDB or Spark timestamp, or a 64-bit microsecond count.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from consentry.errors import BadInput, Problem

__all__ = [
    "EARLIEST_DATE",
    "EARLIEST_INSTANT",
    "LATEST_DATE",
    "LATEST_INSTANT",
    "RANGE_TEXT",
    "in_range",
    "parse_instant",
    "rfc3339",
]

EARLIEST_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
"""The earliest instant accepted anywhere (inclusive)."""

LATEST_INSTANT = datetime(2200, 1, 1, tzinfo=UTC)
"""The end of the accepted instants (exclusive)."""

EARLIEST_DATE = EARLIEST_INSTANT.date()
"""The earliest date accepted anywhere (inclusive), e.g. a birth date."""

LATEST_DATE = LATEST_INSTANT.date()
"""The end of the accepted dates (exclusive)."""

RANGE_TEXT = "between 1900-01-01T00:00:00Z and 2200-01-01T00:00:00Z (exclusive)"
"""The accepted range in words, for error messages."""

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def in_range(at: datetime | date) -> bool:
    """True when `at` (an aware instant or a date) lies in the accepted range.

    1. A date is accepted when EARLIEST_DATE <= at < LATEST_DATE.
    2. An aware instant is accepted when EARLIEST_INSTANT <= at < LATEST_INSTANT, compared
       as instants (so its offset cannot move it past either end unnoticed).
    3. A naive datetime is never in range (it names no instant).
    """
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            return False
        return EARLIEST_INSTANT <= at < LATEST_INSTANT
    return EARLIEST_DATE <= at < LATEST_DATE


def parse_instant(
    text: str | None, *, field: str = "--at", now: datetime | None = None
) -> datetime:
    """The instant `text` names, in UTC.

    1. Absent: now (UTC).
    2. `YYYY-MM-DD`: 00:00 UTC that day.
    3. Otherwise RFC 3339 with an offset (`Z` or `+01:00`); no offset is bad input.
    4. The instant must lie in the accepted range (`in_range`); year 1 or 9999 with an
       extreme offset is bad input, never an overflow.
    """
    if text is None:
        return now or datetime.now(UTC)
    raw = text.strip()
    try:
        if _DATE.fullmatch(raw):
            at: datetime | None = datetime.fromisoformat(raw).replace(tzinfo=UTC)
        else:
            at = datetime.fromisoformat(raw)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        reason = (
            "needs an offset, e.g. Z" if at is not None else "is not a date or RFC 3339 instant"
        )
        raise BadInput(
            Problem(
                location=field,
                row=None,
                field=None,
                message=f"{text!r} {reason} (e.g. 2024-11-15 or 2024-11-15T12:00:00Z)",
            )
        )
    # Compared before converting: year 1 at +14:00 has no UTC form a datetime can hold.
    if not in_range(at):
        raise BadInput(
            Problem(location=field, row=None, field=None, message=f"{text!r} must lie {RANGE_TEXT}")
        )
    return at.astimezone(UTC)


def rfc3339(at: datetime) -> str:
    """`at` in UTC as RFC 3339 with a `Z` suffix."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
