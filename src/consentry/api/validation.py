"""What the API accepts, declared once: instants, user ids and 64-bit integers.

Whatever refuses an input, the answer is a 422 problem (`consentry.serving.problems`) naming the
location and field of every problem.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import Path, Request
from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from consentry.errors import BadInput
from consentry.instants import RANGE_TEXT, in_range, parse_instant

__all__ = [
    "MAX_INT64",
    "NO_CONTROL",
    "USER_ID_MAX_LENGTH",
    "Instant",
    "InstantOrDate",
    "UserId",
    "UserIdPath",
    "WholeNumber",
    "single_query_values",
]

MAX_INT64: Final = 2**63 - 1
"""The largest integer any path, query or body field takes: counts, indices, sizes and limits
are signed 64-bit integers wherever they are stored or summed."""

USER_ID_MAX_LENGTH: Final = 128
"""The longest user id the store holds (`subjects.user_id`)."""

NO_CONTROL: Final = r"^[^\x00-\x1f\x7f]+$"
"""Keys are never empty and never hold control characters (a NUL cannot even be sent to
PostgreSQL)."""


def single_query_values(request: Request) -> None:
    """Refuse a query string that gives one parameter twice (422): no operation takes a list
    in its query, and silently keeping one of two values would accept what was not meant."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise RequestValidationError(
                [{"loc": ("query", name), "msg": "given more than once", "type": "value_error"}]
            )
        seen.add(name)


_WHOLE = re.compile(r"[+-]?[0-9]+")


def _whole_number(value: object) -> object:
    """Text must be digits (with an optional sign): `0.0` or `1e3` is not a whole number,
    although pydantic's lax mode would read them as one."""
    if isinstance(value, str) and not _WHOLE.fullmatch(value.strip()):
        raise PydanticCustomError("int_parsing", "a whole number is expected")
    return value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
"""An integer in a path or query: decimal digits only."""


def _text_instant(value: object) -> object:
    """Text: `parse_instant` (RFC 3339 with an offset, or a date at 00:00 UTC), which also
    checks the accepted range."""
    if isinstance(value, str):
        try:
            return parse_instant(value, field="instant")
        except BadInput as exc:
            raise PydanticCustomError("instant", exc.problems[0].message) from None
    return value


def _in_range(value: datetime) -> datetime:
    """An aware instant must lie in the accepted range (`in_range`): compared before any
    conversion, so an extreme year with an extreme offset is refused, never overflowed."""
    if not in_range(value):
        raise PydanticCustomError("instant", "the instant must lie {range}", {"range": RANGE_TEXT})
    return value.astimezone(UTC)


InstantOrDate = Annotated[
    AwareDatetime,
    BeforeValidator(_text_instant),
    AfterValidator(_in_range),
    WithJsonSchema(
        {
            "type": "string",
            "anyOf": [{"format": "date-time"}, {"format": "date"}],
            "description": "An RFC 3339 instant with an offset (`2025-06-01T12:00:00Z`) or a "
            f"date (00:00 UTC that day), {RANGE_TEXT}.",
        }
    ),
]
"""An instant in a query string, as the CLI's `--at` takes it."""

Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]
"""An instant in a JSON body: RFC 3339 with an offset, in the accepted range; UTC."""

UserId = Annotated[str, Field(min_length=1, max_length=USER_ID_MAX_LENGTH, pattern=NO_CONTROL)]
"""A user id: 1 to 128 characters, no control characters."""

UserIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=USER_ID_MAX_LENGTH,
        pattern=NO_CONTROL,
        description="The platform's user id (1 to 128 characters, no control characters).",
    ),
]
"""`UserId` as a path parameter."""
