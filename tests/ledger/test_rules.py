"""Consent resolution rules: worked examples and properties."""

from __future__ import annotations

import calendar
import time
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.ledger.rules import (
    ConsentRule,
    LatestChoice,
    SubjectFacts,
    adult_from,
    is_minor,
    minor_birth_cutoff,
    resolve_consent,
)
from consentry.policy import Choice, PolicyFile, load_policy
from consentry.settings import DEFAULT_POLICY_FILE
from tests.ledger.policies import SWITCHES

POLICY: PolicyFile = load_policy(DEFAULT_POLICY_FILE)
AFTER = datetime(2025, 3, 1, tzinfo=UTC)
BEFORE = datetime(2024, 6, 1, tzinfo=UTC)
THIRD = "ai_training_third_party"

instants = st.datetimes(
    min_value=datetime(2022, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC)
)
births = st.one_of(st.none(), st.dates(min_value=date(1950, 1, 1), max_value=date(2024, 12, 31)))
regions = st.one_of(st.none(), st.sampled_from(["DE", "FR", "GB", "NO", "US", "IN", "BR", "JP"]))
purposes = st.sampled_from(
    ["ai_training_third_party", "ai_training_first_party", "business_partners", "no_such_purpose"]
)


def decide(subject: SubjectFacts, purpose: str, at: datetime, latest: LatestChoice | None = None):  # type: ignore[no-untyped-def]
    return resolve_consent(POLICY, subject, purpose, at, latest)


def test_third_party_training_did_not_exist_before_2024_11_15() -> None:
    d = decide(SubjectFacts("u", "US", date(1990, 1, 1)), THIRD, BEFORE)
    assert (d.decision, d.rule, d.policy_version) == (
        Choice.DENY,
        ConsentRule.PURPOSE_NOT_IN_POLICY,
        "2023-09-29",
    )
    # Since the version in force, which is the deciding fact; none before the first version.
    assert d.since == datetime(2023, 9, 29, tzinfo=UTC)
    early = decide(
        SubjectFacts("u", "US", date(1990, 1, 1)), THIRD, datetime(2022, 1, 1, tzinfo=UTC)
    )
    assert (early.rule, early.policy_version, early.since) == (
        ConsentRule.PURPOSE_NOT_IN_POLICY,
        None,
        None,
    )


def test_opt_out_worldwide_opt_in_in_the_eu() -> None:
    us = decide(SubjectFacts("u", "US", date(1990, 1, 1)), THIRD, AFTER)
    de = decide(SubjectFacts("u", "DE", date(1990, 1, 1)), THIRD, AFTER)
    gb = decide(SubjectFacts("u", "GB", date(1990, 1, 1)), THIRD, AFTER)
    no = decide(SubjectFacts("u", "NO", date(1990, 1, 1)), THIRD, AFTER)
    assert (us.decision, us.rule) == (Choice.ALLOW, ConsentRule.DEFAULT)
    for d in (de, gb, no):
        assert (d.decision, d.rule) == (Choice.DENY, ConsentRule.REGION_DEFAULT)
    assert us.since == datetime(2024, 11, 15, tzinfo=UTC)


def test_minor_is_denied_even_after_opting_in() -> None:
    latest = LatestChoice(Choice.ALLOW, AFTER - timedelta(days=1), "settings", "e1")
    d = decide(SubjectFacts("u", "US", date(2010, 5, 5)), THIRD, AFTER, latest)
    assert (d.decision, d.rule) == (Choice.DENY, ConsentRule.MINOR)


def test_explicit_and_gpc() -> None:
    when = AFTER - timedelta(days=3)
    explicit = decide(
        SubjectFacts("u", "DE", date(1990, 1, 1)),
        THIRD,
        AFTER,
        LatestChoice(Choice.ALLOW, when, "settings", "e1"),
    )
    assert (explicit.decision, explicit.rule, explicit.since) == (
        Choice.ALLOW,
        ConsentRule.EXPLICIT,
        when,
    )
    gpc = decide(
        SubjectFacts("u", "US", None), THIRD, AFTER, LatestChoice(Choice.DENY, when, "gpc", "e2")
    )
    assert (gpc.decision, gpc.rule) == (Choice.DENY, ConsentRule.GPC)


def test_unknown_user_follows_unknown_age_and_the_default() -> None:
    d = decide(SubjectFacts("nobody"), THIRD, AFTER)
    assert (d.decision, d.rule) == (Choice.ALLOW, ConsentRule.DEFAULT)


def test_event_after_the_instant_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="after the instant"):
        decide(
            SubjectFacts("u", "US", date(1990, 1, 1)),
            "business_partners",
            BEFORE,
            LatestChoice(Choice.DENY, AFTER, "api", "e"),
        )


def test_naive_instant_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        decide(SubjectFacts("u"), THIRD, datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("birth", "adult"),
    [
        (date(2008, 2, 29), datetime(2026, 2, 28, tzinfo=UTC)),
        (date(2004, 2, 29), datetime(2022, 2, 28, tzinfo=UTC)),
        (date(2000, 2, 29), datetime(2018, 2, 28, tzinfo=UTC)),
        (date(2006, 12, 31), datetime(2024, 12, 31, tzinfo=UTC)),
    ],
)
def test_coming_of_age(birth: date, adult: datetime) -> None:
    assert adult_from(birth, 18) == adult
    assert is_minor(birth, adult - timedelta(microseconds=1))
    assert not is_minor(birth, adult)


@pytest.mark.parametrize(
    ("born", "majority"),
    [(2000, 1), (2000, 4), (2000, 100), (2000, 400), (1896, 4), (1896, 104), (2096, 4)],
)
def test_a_29_february_birthday_comes_of_age_on_the_gregorian_leap_rule(
    born: int, majority: int
) -> None:
    """Majority falls on 29 Feb exactly when the year of majority is a Gregorian leap year
    (divisible by 4, and not by 100 unless by 400), otherwise on 28 Feb; the cutoff agrees:
    on 28 Feb of a common year the latest adult birth date is 29 Feb when that day exists."""
    year = born + majority
    expected = 29 if calendar.isleap(year) else 28
    assert adult_from(date(born, 2, 29), majority) == datetime(year, 2, expected, tzinfo=UTC)
    at = datetime(year, 2, 28, tzinfo=UTC)
    latest = 29 if calendar.isleap(born) and not calendar.isleap(year) else 28
    assert minor_birth_cutoff(at, majority) == date(born, 2, latest)
    if calendar.isleap(year):
        assert minor_birth_cutoff(datetime(year, 2, 29, tzinfo=UTC), majority) == date(born, 2, 29)
    elif calendar.isleap(born):
        assert minor_birth_cutoff(datetime(year, 3, 1, tzinfo=UTC), majority) == date(born, 3, 1)


@settings(max_examples=400)
@given(
    at=instants,
    birth=st.dates(min_value=date(1990, 1, 1), max_value=date(2020, 12, 31)),
    majority=st.integers(min_value=16, max_value=21),
)
def test_minor_cutoff_agrees_with_is_minor(at: datetime, birth: date, majority: int) -> None:
    cutoff = minor_birth_cutoff(at, majority)
    assert is_minor(birth, at, majority) == (birth > cutoff)


@settings(max_examples=300)
@given(
    region=regions,
    birth=births,
    purpose=purposes,
    at=instants,
    events=st.lists(
        st.tuples(
            instants, st.sampled_from(list(Choice)), st.sampled_from(["settings", "gpc", "api"])
        ),
        max_size=6,
    ),
    later=st.lists(st.tuples(st.sampled_from(list(Choice)), st.integers(1, 10**9)), max_size=4),
)
def test_events_after_the_instant_never_change_the_answer(
    region: str | None,
    birth: date | None,
    purpose: str,
    at: datetime,
    events: list[tuple[datetime, Choice, str]],
    later: list[tuple[Choice, int]],
) -> None:
    subject = SubjectFacts("u", region, birth)
    numbered = [(when, f"e{i:03d}", c, s) for i, (when, c, s) in enumerate(events)]

    def answer(evs: list[tuple[datetime, str, Choice, str]]):  # type: ignore[no-untyped-def]
        upto = [e for e in evs if e[0] <= at]
        if not upto:
            return decide(subject, purpose, at)
        when, eid, c, s = max(upto, key=lambda e: (e[0], e[1]))
        return decide(subject, purpose, at, LatestChoice(c, when, s, eid))

    future = [
        (at + timedelta(microseconds=delta), f"f{i:03d}", c, "settings")
        for i, (c, delta) in enumerate(later)
    ]
    assert answer(numbered) == answer(numbered + future)


@settings(max_examples=300)
@given(
    region=regions,
    birth=st.dates(min_value=date(2007, 1, 1), max_value=date(2024, 1, 1)),
    purpose=purposes,
    at=instants,
    choice=st.sampled_from(list(Choice)),
)
def test_minors_are_never_allowed_where_the_purpose_denies_them(
    region: str | None, birth: date, purpose: str, at: datetime, choice: Choice
) -> None:
    version = POLICY.version_at(at)
    definition = version.purpose(purpose) if version else None
    latest = LatestChoice(choice, at, "settings", "e")
    d = decide(SubjectFacts("u", region, birth), purpose, at, latest)
    if definition is not None and definition.minors is Choice.DENY and is_minor(birth, at):
        assert d.decision is Choice.DENY
        assert d.rule is ConsentRule.MINOR


def test_unknown_age_and_minority_follow_the_version_in_force() -> None:
    at = datetime(2025, 6, 1, tzinfo=UTC)
    since = datetime(2024, 1, 1, tzinfo=UTC)
    unknown = resolve_consent(SWITCHES, SubjectFacts("u"), "strict", at, None)
    assert (unknown.decision, unknown.rule, unknown.since) == (
        Choice.DENY,
        ConsentRule.UNKNOWN_AGE,
        since,
    )
    sixteen = resolve_consent(
        SWITCHES, SubjectFacts("u", None, date(2009, 6, 1)), "strict", at, None
    )
    assert (sixteen.decision, sixteen.rule) == (Choice.ALLOW, ConsentRule.DEFAULT)
    fifteen = resolve_consent(
        SWITCHES, SubjectFacts("u", None, date(2009, 6, 2)), "strict", at, None
    )
    assert (fifteen.decision, fifteen.rule, fifteen.since) == (
        Choice.DENY,
        ConsentRule.MINOR,
        since,
    )


def test_the_cutoff_of_a_29_february_instant_in_a_common_year_back() -> None:
    # 29 Feb 2024 minus 18 years is 2006, which has no 29 Feb: born 28 Feb 2006 is an adult.
    at = datetime(2024, 2, 29, 12, tzinfo=UTC)
    assert minor_birth_cutoff(at) == date(2006, 2, 28)
    assert minor_birth_cutoff(at, 18) == date(2006, 2, 28)
    assert minor_birth_cutoff(at, 20) == date(2004, 2, 29)
    assert minor_birth_cutoff(datetime(2024, 3, 29, tzinfo=UTC)) == date(2006, 3, 29)
    assert minor_birth_cutoff(datetime(2025, 1, 31, tzinfo=UTC)) == date(2007, 1, 31)


def test_the_cutoff_is_taken_in_utc_whatever_the_machines_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An instant given with an offset is a UTC day; the process's own zone never enters."""
    at = datetime(2025, 3, 1, 1, tzinfo=timezone(timedelta(hours=5)))  # 28 Feb 20:00 UTC
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")  # UTC+14: 1 March 10:00 there
    time.tzset()
    try:
        assert minor_birth_cutoff(at) == date(2007, 2, 28)
        assert not is_minor(date(2007, 2, 28), at)
        assert is_minor(date(2007, 3, 1), at)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
