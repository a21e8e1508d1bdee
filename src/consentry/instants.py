"""Instants as people and programs write them: one parser for the CLI and the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from consentry.errors import BadInput, Problem

__all__ = ["parse_instant", "rfc3339"]

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_instant(
    text: str | None, *, field: str = "--at", now: datetime | None = None
) -> datetime:
    """The instant `text` names, in UTC.

    1. Absent: now (UTC).
    2. `YYYY-MM-DD`: 00:00 UTC that day.
    3. Otherwise RFC 3339 with an offset (`Z` or `+01:00`); no offset is bad input.
    """
    if text is None:
        return now or datetime.now(UTC)
    raw = text.strip()
    try:
        if _DATE.fullmatch(raw):
            return datetime.fromisoformat(raw).replace(tzinfo=UTC)
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
    return at.astimezone(UTC)


def rfc3339(at: datetime) -> str:
    """`at` in UTC as RFC 3339 with a `Z` suffix."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")
