"""Cut-offs: one comparison per row agrees exactly with `RetentionRule.expires_at`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.policy import Duration, RetentionRule
from consentry.retention import Condition, cutoff, cutoffs_for, is_due, trigger_of

instants = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(UTC)
)
durations = st.builds(
    Duration,
    years=st.integers(0, 3),
    months=st.integers(0, 30),
    days=st.integers(0, 400),
    seconds=st.integers(0, 200_000),
)


exact = st.builds(Duration, days=st.integers(0, 4000), seconds=st.integers(0, 200_000))


@settings(max_examples=300, deadline=None)
@given(duration=exact, at=instants, record=instants)
def test_an_exact_duration_has_a_cut_off(
    duration: Duration, at: datetime, record: datetime
) -> None:
    cut = cutoff(duration, at)
    assert duration.add_to(cut) <= at
    assert duration.add_to(cut + timedelta(microseconds=1)) > at
    # The vectorised test (`record <= cut`) is the row-at-a-time one (`record + d <= at`).
    assert (record <= cut) == Condition(duration, at).holds_for(record)


def test_calendar_durations_have_no_cut_off() -> None:
    # 31 August 00:00 + 6 months = 28 February 00:00, due at 28 February 00:00, while
    # 29 August 12:00 (earlier) + 6 months = 28 February 12:00 is not: no prefix, no cut-off.
    at = datetime(2026, 2, 28, tzinfo=UTC)
    condition = Condition(Duration(months=6), at)
    assert condition.cutoff is None
    assert condition.holds_for(datetime(2025, 8, 31, tzinfo=UTC))
    assert not condition.holds_for(datetime(2025, 8, 29, 12, tzinfo=UTC))
    assert condition.describe() == "+ P6M <= 2026-02-28T00:00:00Z"
    with pytest.raises(ValueError, match="calendar parts"):
        cutoff(Duration(months=6), at)


@st.composite
def rules(draw: st.DrawFn) -> RetentionRule:
    """A rule with at least one end condition."""
    max_age = draw(st.none() | durations.filter(lambda d: not d.is_zero))
    active = draw(st.none() | st.just(True))
    grace = draw(st.none() | durations)
    post = draw(st.none() | durations)
    if max_age is None and active is None and grace is None and post is None:
        max_age = Duration(months=18)
    return RetentionRule(
        max_age=max_age,
        while_account_active=active,
        after_account_deleted=grace,
        after_post_deleted=post,
    )


@settings(max_examples=300, deadline=None)
@given(
    rule=rules(),
    at=instants,
    created=instants,
    account=st.none() | instants,
    post=st.none() | instants,
)
def test_trigger_of_agrees_with_expires_at(
    rule: RetentionRule,
    at: datetime,
    created: datetime,
    account: datetime | None,
    post: datetime | None,
) -> None:
    cuts = cutoffs_for(rule, at)
    found = trigger_of(cuts, created, account_deleted_at=account, post_deleted_at=post)
    assert (found is not None) == is_due(
        rule, at, created, account_deleted_at=account, post_deleted_at=post
    )
    if found == "max_age":
        assert rule.max_age is not None


def test_account_trigger_is_named_after_the_rule() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert cutoffs_for(RetentionRule(while_account_active=True), at).account_trigger == (
        "while_account_active"
    )
    rule = RetentionRule(while_account_active=True, after_account_deleted=Duration(days=30))
    cuts = cutoffs_for(rule, at)
    assert cuts.account_trigger == "after_account_deleted"
    assert cuts.as_dict() == {"after_account_deleted": "account deleted_at <= 2025-12-02T00:00:00Z"}


def test_the_first_condition_in_schema_order_names_the_trigger() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    day = Duration(days=1)
    rule = RetentionRule(max_age=day, after_account_deleted=day, after_post_deleted=day)
    cuts = cutoffs_for(rule, at)
    old, new = at - timedelta(days=2), at
    assert trigger_of(cuts, old, account_deleted_at=old, post_deleted_at=old) == "max_age"
    assert trigger_of(cuts, new, account_deleted_at=old, post_deleted_at=old) == (
        "after_account_deleted"
    )
    assert trigger_of(cuts, new, account_deleted_at=new, post_deleted_at=old) == (
        "after_post_deleted"
    )
    assert trigger_of(cuts, new, post_deleted_at=old) == "after_post_deleted"
    assert trigger_of(cuts, new, account_deleted_at=new, post_deleted_at=new) is None
    # An unknown instant never makes a record due.
    assert trigger_of(cuts, None) is None
    assert cuts.as_dict() == {
        "max_age": "created_at <= 2025-12-31T00:00:00Z",
        "after_account_deleted": "account deleted_at <= 2025-12-31T00:00:00Z",
        "after_post_deleted": "deleted_at <= 2025-12-31T00:00:00Z",
    }
    assert cutoffs_for(RetentionRule(max_age=day), at).as_dict() == {
        "max_age": "created_at <= 2025-12-31T00:00:00Z"
    }


@pytest.mark.parametrize("duration", [Duration(days=30), Duration(months=1, seconds=5)])
def test_a_record_is_due_at_the_instant_its_duration_ends(duration: Duration) -> None:
    """`instant + duration <= at`: due at the end itself, not one microsecond before."""
    created = datetime(2025, 1, 31, 12, tzinfo=UTC)
    end = duration.add_to(created)
    tick = timedelta(microseconds=1)
    rule = RetentionRule(max_age=duration)
    assert is_due(rule, end, created)
    assert not is_due(rule, end - tick, created)
    assert Condition(duration, end).holds_for(created)
    assert not Condition(duration, end - tick).holds_for(created)
    assert trigger_of(cutoffs_for(rule, end), created) == "max_age"
    assert trigger_of(cutoffs_for(rule, end - tick), created) is None
    assert not is_due(RetentionRule(while_account_active=True), end, created)


def test_a_cut_off_is_in_utc_whatever_the_offset_of_the_instant() -> None:
    local = datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))
    cut = cutoff(Duration(days=1), local)
    assert cut == datetime(2025, 12, 31, tzinfo=UTC)
    assert cut.utcoffset() == timedelta(0)
    condition = cutoffs_for(RetentionRule(max_age=Duration(days=1)), local).created
    assert condition is not None
    assert condition.describe() == "<= 2025-12-31T00:00:00Z"


def test_cut_offs_are_in_utc_whatever_the_machines_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        local = datetime(2026, 1, 1, 3, tzinfo=timezone(timedelta(hours=3)))
        cuts = cutoffs_for(RetentionRule(max_age=Duration(months=1)), local)
        assert cuts.created is not None
        # A calendar duration keeps the instant itself: it must be the UTC one.
        assert cuts.created.describe() == "+ P1M <= 2026-01-01T00:00:00Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_post_is_due_a_grace_after_its_deletion() -> None:
    at = datetime(2026, 1, 10, tzinfo=UTC)
    rule = RetentionRule(after_post_deleted=Duration(days=1))
    created = at - timedelta(days=3)
    assert is_due(rule, at, created, post_deleted_at=at - timedelta(days=1))
    assert not is_due(rule, at, created, post_deleted_at=at - timedelta(hours=23))
    assert not is_due(rule, at, created)
    account = RetentionRule(after_account_deleted=Duration(days=2))
    assert is_due(account, at, created, account_deleted_at=at - timedelta(days=2))
    assert not is_due(account, at, created, post_deleted_at=at - timedelta(days=9))


@pytest.mark.parametrize("duration", ["P30D", "PT1S", "P1M", "P1Y2M3DT4S"])
def test_the_engine_is_due_exactly_at_the_end_like_the_rule(duration: str) -> None:
    """`instant + duration <= at` in DuckDB as in Python, one µs either side and at the
    instant, for exact durations (compared with the cut-off) and calendar ones (added in the
    engine); a null instant is never due."""
    import ibis
    import pyarrow as pa

    from consentry.retention.candidates import _due

    at = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # mid-month: months subtract exactly
    condition = Condition(Duration.parse(duration), at)
    end = condition.duration.subtract_from(at)
    instants = [end - timedelta(microseconds=1), end, end + timedelta(microseconds=1), None]
    table = ibis.memtable(pa.table({"t": pa.array(instants, pa.timestamp("us", tz="UTC"))}))
    con = ibis.duckdb.connect()
    got = con.to_pyarrow(table.select(due=_due(table.t, condition)))["due"].to_pylist()
    assert got == [condition.holds_for(i) for i in instants] == [True, True, False, False]
