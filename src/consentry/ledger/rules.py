"""Consent resolution: the pure rule that decides whether a purpose may use a user's posts.

Everything here is a function over plain values (the policy, the user's facts, the user's
latest consent event); the ledger and the bulk engine feed it and must agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum

from consentry.policy import Choice, PolicyFile, Purpose
from consentry.policy.model import region_default_for

__all__ = [
    "ConsentDecision",
    "ConsentRule",
    "LatestChoice",
    "SubjectFacts",
    "adult_from",
    "is_minor",
    "minor_birth_cutoff",
    "resolve_consent",
]


class ConsentRule(StrEnum):
    """Which rule produced a decision, in the order the rules are applied."""

    PURPOSE_NOT_IN_POLICY = "purpose_not_in_policy"
    MINOR = "minor"
    UNKNOWN_AGE = "unknown_age"
    EXPLICIT = "explicit"
    GPC = "gpc"
    REGION_DEFAULT = "region_default"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class SubjectFacts:
    """What resolution needs to know about a user. Unknown users have no region or birth date."""

    user_id: str
    region: str | None = None
    birth_date: date | None = None


@dataclass(frozen=True, slots=True)
class LatestChoice:
    """The user's latest consent event for one purpose at or before the instant asked about."""

    choice: Choice
    at: datetime
    source: str
    event_id: str


@dataclass(frozen=True, slots=True)
class ConsentDecision:
    """The answer for one (user, purpose, instant)."""

    user_id: str
    purpose: str
    decision: Choice
    rule: ConsentRule
    policy_version: str | None
    """The version in force at the instant asked about (None before the first version)."""
    since: datetime | None
    """When the deciding fact began: the event's instant for explicit and gpc, otherwise the
    effective date of the policy version in force."""

    @property
    def allowed(self) -> bool:
        return self.decision is Choice.ALLOW


def adult_from(birth_date: date, age_of_majority: int) -> datetime:
    """The instant (00:00 UTC) a person born on `birth_date` comes of age.

    A 29 February birthday comes of age on 28 February in a common year, so the mapping
    from birth date to majority is monotonic (which the bulk form's cutoff relies on).
    """
    year = birth_date.year + age_of_majority
    day = birth_date.day
    if birth_date.month == 2 and day == 29 and not _is_leap(year):
        day = 28
    return datetime(year, birth_date.month, day, tzinfo=UTC)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def is_minor(birth_date: date, at: datetime, age_of_majority: int = 18) -> bool:
    """A person is a minor at `at` when `birth_date + age_of_majority years > at`."""
    return adult_from(birth_date, age_of_majority) > at


def minor_birth_cutoff(at: datetime, age_of_majority: int = 18) -> date:
    """The latest birth date of an adult at `at`: minor  <=>  birth_date > cutoff.

    Lets a vectorised engine test minority with one comparison per row.
    """
    at = at.astimezone(UTC)
    year = at.year - age_of_majority
    # Candidates: the same calendar day `age_of_majority` years back, clamped for 29 Feb.
    day = at.day
    if at.month == 2 and day == 29 and not _is_leap(year):
        day = 28
    candidate = date(year, at.month, day)
    # adult_from(candidate) is 00:00 of that day <= at, so the candidate is an adult; a
    # 29 Feb birth in a leap `year` may also be an adult when `at` is 28 Feb of a common year.
    if at.month == 2 and at.day == 28 and _is_leap(year) and not _is_leap(at.year):
        candidate = date(year, 2, 29)
    return candidate


def resolve_consent(
    policy: PolicyFile,
    subject: SubjectFacts,
    purpose_key: str,
    at: datetime,
    latest: LatestChoice | None,
) -> ConsentDecision:
    """Decide whether `purpose_key` may use `subject`'s posts at `at`.

    1. The purpose is absent from the policy version in force at `at` (or no version is in
       force) -> deny, `purpose_not_in_policy`.
    2. The user is a minor at `at` (birth_date + age of majority > at) and the purpose denies
       minors -> deny, `minor`. An unknown birth date with `unknown_age: deny` -> deny,
       `unknown_age`.
    3. The latest event for (user, purpose) with instant <= `at` (ties: larger event_id)
       decides: `explicit`, or `gpc` when its source is gpc. `latest` must already be that
       event (the caller selects it; `LatestChoice.at` after `at` is a programming error).
    4. Otherwise the region default of the version in force (`region_default`), else the
       purpose default (`default`).
    """
    if at.tzinfo is None:
        raise ValueError("resolve_consent needs an aware instant")
    version = policy.version_at(at)
    purpose: Purpose | None = version.purpose(purpose_key) if version else None

    def decided(choice: Choice, rule: ConsentRule, since: datetime | None) -> ConsentDecision:
        return ConsentDecision(
            user_id=subject.user_id,
            purpose=purpose_key,
            decision=choice,
            rule=rule,
            policy_version=version.version if version else None,
            since=since,
        )

    if version is None or purpose is None:
        return decided(
            Choice.DENY,
            ConsentRule.PURPOSE_NOT_IN_POLICY,
            version.effective_from if version else None,
        )
    if subject.birth_date is None:
        if purpose.unknown_age is Choice.DENY:
            return decided(Choice.DENY, ConsentRule.UNKNOWN_AGE, version.effective_from)
    elif purpose.minors is Choice.DENY and is_minor(
        subject.birth_date, at, version.age_of_majority
    ):
        return decided(Choice.DENY, ConsentRule.MINOR, version.effective_from)
    if latest is not None:
        if latest.at > at:
            raise ValueError("latest event is after the instant asked about")
        rule = ConsentRule.GPC if latest.source == "gpc" else ConsentRule.EXPLICIT
        return decided(latest.choice, rule, latest.at)
    if subject.region is not None:
        regional = region_default_for(purpose, subject.region)
        if regional is not None:
            return decided(regional, ConsentRule.REGION_DEFAULT, version.effective_from)
    return decided(purpose.default, ConsentRule.DEFAULT, version.effective_from)
