"""Durations in policy files: ISO 8601 (`P18M`, `PT24H`) or friendly (`18 months`, `24h`).

A duration keeps its calendar parts (years, months) apart from its exact parts (days,
seconds). All instants in Consentry are UTC, where a day is always 86,400 seconds, so days
are exact; months and years are not (a month is 28 to 31 days) and are added on the
calendar.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = ["Duration"]

_ISO = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)
_FRIENDLY_PART = re.compile(r"(\d+)\s*([a-z]+)")
_FRIENDLY_SEPARATORS = re.compile(r"(?:\s|,|\band\b)*")

# Friendly unit spellings -> (part, multiplier). A bare "m" is refused: months or minutes?
_UNITS: dict[str, tuple[str, int]] = {}
for _names, _part, _mult in (
    (("y", "yr", "yrs", "year", "years"), "years", 1),
    (("mo", "mon", "month", "months"), "months", 1),
    (("w", "wk", "wks", "week", "weeks"), "days", 7),
    (("d", "day", "days"), "days", 1),
    (("h", "hr", "hrs", "hour", "hours"), "seconds", 3600),
    (("min", "mins", "minute", "minutes"), "seconds", 60),
    (("s", "sec", "secs", "second", "seconds"), "seconds", 1),
):
    for _name in _names:
        _UNITS[_name] = (_part, _mult)

_SECONDS_PER_DAY = 86_400


def _parse(text: str) -> dict[str, int]:
    """Turn duration text into parts.

    1. Strip and lower-case; a leading `-` means negative, which is refused.
    2. Text starting with `p` is ISO 8601 (`PnYnMnWnDTnHnMnS`, whole numbers only).
    3. Anything else is a list of `<n> <unit>` parts (`1 year, 6 months`, `24h`,
       `1 day and 12 hours`); each unit may be spelled short or long.
    """
    raw = text.strip()
    lowered = raw.lower()
    if lowered.startswith("-"):
        raise ValueError(f"durations cannot be negative: {raw!r}")
    if not lowered:
        raise ValueError("empty duration; write e.g. '30 days' or 'P30D'")
    if lowered.startswith("p"):
        return _parse_iso(raw)
    return _parse_friendly(raw, lowered)


def _parse_iso(raw: str) -> dict[str, int]:
    match = _ISO.fullmatch(raw.upper())
    if match is None or raw.upper() in ("P", "PT") or raw.upper().endswith("T"):
        if "." in raw or "," in raw:
            raise ValueError(f"fractional durations are not supported: {raw!r}")
        raise ValueError(f"not an ISO 8601 duration: {raw!r} (expected e.g. P18M, P30D, PT24H)")
    g = {k: int(v) if v else 0 for k, v in match.groupdict().items()}
    return {
        "years": g["years"],
        "months": g["months"],
        "days": g["weeks"] * 7 + g["days"],
        "seconds": g["hours"] * 3600 + g["minutes"] * 60 + g["seconds"],
    }


def _parse_friendly(raw: str, lowered: str) -> dict[str, int]:
    parts = {"years": 0, "months": 0, "days": 0, "seconds": 0}
    pos = 0
    found = False
    while True:
        separator = _FRIENDLY_SEPARATORS.match(lowered, pos)
        pos = separator.end() if separator else pos
        if pos == len(lowered):
            break
        match = _FRIENDLY_PART.match(lowered, pos)
        if match is None:
            raise ValueError(
                f"not a duration: {raw!r} (expected e.g. '18 months', '30 days', '24h' or 'P30D')"
            )
        number, unit = int(match.group(1)), match.group(2)
        if unit == "m":
            raise ValueError(f"'m' is ambiguous in {raw!r}: write 'min' (minutes) or 'mo' (months)")
        if unit not in _UNITS:
            raise ValueError(
                f"unknown unit {unit!r} in {raw!r}; use years, months, weeks, days, hours, "
                "minutes or seconds"
            )
        part, mult = _UNITS[unit]
        parts[part] += number * mult
        pos = match.end()
        found = True
    if not found:
        raise ValueError(f"not a duration: {raw!r}")
    return parts


def _add_months(at: datetime, months: int) -> datetime:
    """Move `at` by whole calendar months, clamping the day to the target month's length."""
    index = at.year * 12 + (at.month - 1) + months
    year, month = divmod(index, 12)
    day = min(at.day, calendar.monthrange(year, month + 1)[1])
    return at.replace(year=year, month=month + 1, day=day)


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


class Duration(BaseModel):
    """A non-negative length of time with calendar parts (years, months) and exact parts.

    Two durations are equal when they move every UTC instant to the same place: `P1Y` equals
    `P12M` and `P1D` equals `PT24H`. Serialised (JSON, `model_dump`) as ISO 8601 text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    years: int = Field(default=0, ge=0, description="Calendar years.")
    months: int = Field(default=0, ge=0, description="Calendar months.")
    days: int = Field(default=0, ge=0, description="Days of exactly 86,400 seconds (UTC).")
    seconds: int = Field(default=0, ge=0, description="Seconds.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """Accept ISO 8601 or friendly text, a `timedelta`, or the four parts as a mapping."""
        if isinstance(value, str):
            return _parse(value)
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise ValueError(f"durations cannot be negative: {value}")
            if value.microseconds:
                raise ValueError("durations are whole seconds")
            return {"days": value.days, "seconds": value.seconds}
        if isinstance(value, bool | int | float):
            raise ValueError(
                f"a duration needs a unit: write e.g. '{value} days' or 'P{value}D', not {value!r}"
            )
        return value

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse ISO 8601 or friendly duration text; ValueError explains a refusal."""
        return cls(**_parse(text))

    @model_serializer(mode="plain")
    def _as_text(self) -> str:
        return self.iso()

    # -- comparison: by effect on an instant, not by spelling ------------------------------

    @property
    def calendar_months(self) -> int:
        """Years and months as a number of months (the part whose length varies)."""
        return self.years * 12 + self.months

    @property
    def fixed_seconds(self) -> int:
        """Days and seconds as a number of seconds (the part whose length never varies)."""
        return self.days * _SECONDS_PER_DAY + self.seconds

    def _key(self) -> tuple[int, int]:
        return (self.calendar_months, self.fixed_seconds)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Duration):
            return False
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def has_calendar_parts(self) -> bool:
        """True when the length depends on the calendar (it has years or months)."""
        return self.calendar_months > 0

    @property
    def is_zero(self) -> bool:
        return self._key() == (0, 0)

    def total_seconds(self) -> int:
        """Exact length in seconds; ValueError when it has years or months."""
        if self.has_calendar_parts:
            raise ValueError(f"{self.describe()} has no fixed length in seconds")
        return self.fixed_seconds

    def to_timedelta(self) -> timedelta:
        """Exact length as a `timedelta`; ValueError when it has years or months."""
        return timedelta(seconds=self.total_seconds())

    # -- arithmetic ---------------------------------------------------------------------

    def add_to(self, at: datetime) -> datetime:
        """The instant this long after `at`.

        1. An aware `at` is converted to UTC first (so days are 24 hours); a naive one is
           taken to be UTC already and the result is naive too.
        2. Years and months move along the calendar; a day past the end of the target month
           is clamped (31 January + 1 month = 28 or 29 February).
        3. Days and seconds are then added exactly.
        """
        base = at.astimezone(UTC) if at.tzinfo is not None else at
        return _add_months(base, self.calendar_months) + timedelta(seconds=self.fixed_seconds)

    def subtract_from(self, at: datetime) -> datetime:
        """The instant this long before `at` (same steps as `add_to`, backwards)."""
        base = at.astimezone(UTC) if at.tzinfo is not None else at
        return _add_months(base, -self.calendar_months) - timedelta(seconds=self.fixed_seconds)

    # -- text ---------------------------------------------------------------------------

    def iso(self) -> str:
        """Canonical ISO 8601 text, e.g. `P18M`, `P30D`, `PT24H`, `PT0S`."""
        date_part = "".join(
            f"{n}{d}" for n, d in ((self.years, "Y"), (self.months, "M"), (self.days, "D")) if n
        )
        hours, rest = divmod(self.seconds, 3600)
        minutes, secs = divmod(rest, 60)
        time_part = "".join(f"{n}{d}" for n, d in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
        if not date_part and not time_part:
            return "PT0S"
        return f"P{date_part}" + (f"T{time_part}" if time_part else "")

    def describe(self) -> str:
        """Plain words, e.g. `18 months`, `1 year and 6 months`, `24 hours`, `0 seconds`."""
        hours, rest = divmod(self.seconds, 3600)
        minutes, secs = divmod(rest, 60)
        words = [
            _plural(n, unit)
            for n, unit in (
                (self.years, "year"),
                (self.months, "month"),
                (self.days, "day"),
                (hours, "hour"),
                (minutes, "minute"),
                (secs, "second"),
            )
            if n
        ]
        if not words:
            return "0 seconds"
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]

    def __str__(self) -> str:
        return self.iso()
