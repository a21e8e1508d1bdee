"""Durations: parsing both spellings, calendar-correct arithmetic, refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from consentry.policy import Duration

durations = st.builds(
    Duration,
    years=st.integers(0, 5),
    months=st.integers(0, 30),
    days=st.integers(0, 800),
    seconds=st.integers(0, 3_000_000),
)
fixed_durations = st.builds(Duration, days=st.integers(0, 800), seconds=st.integers(0, 3_000_000))
instants = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("P18M", (0, 18, 0, 0)),
        ("P30D", (0, 0, 30, 0)),
        ("PT24H", (0, 0, 0, 86_400)),
        ("P1Y2M3W4DT5H6M7S", (1, 2, 25, 5 * 3600 + 6 * 60 + 7)),
        ("p2w", (0, 0, 14, 0)),
        ("18 months", (0, 18, 0, 0)),
        ("30 days", (0, 0, 30, 0)),
        ("24 hours", (0, 0, 0, 86_400)),
        ("24h", (0, 0, 0, 86_400)),
        ("1 year, 6 months", (1, 6, 0, 0)),
        ("1 day and 12 hours", (0, 0, 1, 43_200)),
        ("2 weeks", (0, 0, 14, 0)),
        ("90 min", (0, 0, 0, 5_400)),
        ("1 Year", (1, 0, 0, 0)),
        ("0 days", (0, 0, 0, 0)),
    ],
)
def test_parses_iso_and_friendly_forms(text: str, parts: tuple[int, int, int, int]) -> None:
    d = Duration.parse(text)
    assert (d.years, d.months, d.days, d.seconds) == parts
    assert Duration.model_validate(text) == d


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-P1D", "negative"),
        ("-5 days", "negative"),
        ("5 m", "ambiguous"),
        ("5 parsecs", "unknown unit 'parsecs'"),
        ("P1.5D", "fractional"),
        ("P", "not an ISO 8601 duration"),
        ("PT", "not an ISO 8601 duration"),
        ("P1DT", "not an ISO 8601 duration"),
        ("", "empty"),
        ("days", "not a duration"),
        ("1.5 days", "not a duration"),
    ],
)
def test_refuses_bad_text(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Duration.parse(text)
    with pytest.raises(ValidationError, match=message):
        Duration.model_validate(text)


def test_refuses_bare_numbers_and_negative_parts() -> None:
    with pytest.raises(ValidationError, match="needs a unit"):
        Duration.model_validate(30)
    with pytest.raises(ValidationError):
        Duration(days=-1)
    with pytest.raises(ValidationError, match="negative"):
        Duration.model_validate(timedelta(days=-1))


def test_equality_is_by_effect() -> None:
    assert Duration.parse("P1D") == Duration.parse("24h")
    assert Duration.parse("P1Y") == Duration.parse("12 months")
    assert hash(Duration.parse("P1D")) == hash(Duration.parse("PT24H"))
    assert Duration.parse("P1M") != Duration.parse("P30D")


def test_calendar_months_are_clamped_to_month_end() -> None:
    month = Duration.parse("1 month")
    assert month.add_to(datetime(2024, 1, 31, tzinfo=UTC)) == datetime(2024, 2, 29, tzinfo=UTC)
    assert month.add_to(datetime(2023, 1, 31, tzinfo=UTC)) == datetime(2023, 2, 28, tzinfo=UTC)
    assert Duration.parse("P1Y").add_to(datetime(2024, 2, 29, tzinfo=UTC)) == datetime(
        2025, 2, 28, tzinfo=UTC
    )
    assert Duration.parse("18 months").subtract_from(datetime(2025, 5, 15, tzinfo=UTC)) == (
        datetime(2023, 11, 15, tzinfo=UTC)
    )


def test_aware_instants_are_moved_in_utc() -> None:
    cet = timezone(timedelta(hours=1))
    result = Duration.parse("24h").add_to(datetime(2024, 3, 1, 0, 30, tzinfo=cet))
    assert result == datetime(2024, 3, 1, 23, 30, tzinfo=UTC)
    assert result.tzinfo is UTC


def test_total_seconds_only_without_calendar_parts() -> None:
    assert Duration.parse("P1DT1S").total_seconds() == 86_401
    assert Duration.parse("24h").to_timedelta() == timedelta(hours=24)
    with pytest.raises(ValueError, match="no fixed length"):
        Duration.parse("P1M").total_seconds()


def test_serialises_as_iso_text() -> None:
    dumped: object = Duration.parse("18 months").model_dump()
    assert dumped == "P18M"
    assert Duration.parse("18 months").model_dump_json() == '"P18M"'
    assert Duration.parse("24h").iso() == "PT24H"
    assert Duration().iso() == "PT0S"
    assert Duration.parse("1 year and 6 months").describe() == "1 year and 6 months"
    assert Duration.parse("P1DT2H3M").describe() == "1 day, 2 hours and 3 minutes"


@given(durations)
def test_iso_and_words_round_trip(d: Duration) -> None:
    for text in (d.iso(), d.describe(), str(d)):
        back = Duration.parse(text)
        assert back == d
        assert (back.years, back.months, back.days, back.seconds) == (
            d.years,
            d.months,
            d.days,
            d.seconds,
        )


@given(durations, durations, instants)
def test_adding_is_monotonic(a: Duration, b: Duration, at: datetime) -> None:
    assert a.add_to(at) >= at
    assert a.subtract_from(at) <= at
    if a.calendar_months <= b.calendar_months and a.fixed_seconds <= b.fixed_seconds:
        assert a.add_to(at) <= b.add_to(at)
        assert a.subtract_from(at) >= b.subtract_from(at)


@given(fixed_durations, instants)
def test_fixed_durations_add_exactly(d: Duration, at: datetime) -> None:
    assert d.add_to(at) - at == timedelta(seconds=d.total_seconds())
    assert d.subtract_from(d.add_to(at)) == at


@given(st.integers(0, 200), instants.filter(lambda t: t.day <= 28))
def test_months_invert_when_no_clamping(months: int, at: datetime) -> None:
    d = Duration(months=months)
    assert d.subtract_from(d.add_to(at)) == at
    assert d.add_to(at).day == at.day
