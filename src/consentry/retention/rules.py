"""Retention rules as conditions on one instant column: the pure logic the planner vectorises.

A rule's end conditions (`RetentionRule.expires_at`) each add a duration to an instant and
compare with `at`. Two cases:

1. An *exact* duration (days and seconds only) moves every instant by the same amount, so
   `instant + d <= at` is `instant <= at - d`: one comparison with a constant per row, the
   *cut-off* — which every engine does at memory speed.
2. A duration with months or years is added on the calendar, clamping the day (31 August +
   6 months = 28 February) and keeping the time of day. That is not monotone (31 August
   00:00 moves before 29 August 12:00 does), so no cut-off exists; the engines add the
   interval themselves (`instant + INTERVAL m MONTH + INTERVAL s SECOND`, clamping as
   `Duration.add_to` does) and compare.

`trigger_of` is the row-at-a-time reference both cases are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from consentry.policy.duration import Duration
from consentry.policy.model import RetentionRule

__all__ = ["Condition", "Cutoffs", "cutoff", "cutoffs_for", "is_due", "trigger_of"]


def cutoff(duration: Duration, at: datetime) -> datetime:
    """The latest instant `T` with `T + duration <= at`, for an exact duration.

    ValueError for a duration with months or years (it has no cut-off; see the module).
    """
    if duration.has_calendar_parts:
        raise ValueError(f"{duration.describe()} has calendar parts: it has no single cut-off")
    return at.astimezone(UTC) - timedelta(seconds=duration.fixed_seconds)


@dataclass(frozen=True, slots=True)
class Condition:
    """`instant + duration <= at`, the form every end condition takes."""

    duration: Duration
    at: datetime

    @property
    def cutoff(self) -> datetime | None:
        """The constant to compare with (`instant <= cutoff`), or None when the duration
        has calendar parts and the engine must add it."""
        return None if self.duration.has_calendar_parts else cutoff(self.duration, self.at)

    def holds_for(self, instant: datetime | None) -> bool:
        """The row-at-a-time test (None: the instant is unknown, the condition is false)."""
        return instant is not None and self.duration.add_to(instant) <= self.at

    def describe(self) -> str:
        """`<= 2024-05-15T00:00:00Z` or `+ P18M <= 2026-01-01T00:00:00Z` (for plans)."""
        if self.cutoff is not None:
            return "<= " + self.cutoff.isoformat().replace("+00:00", "Z")
        return f"+ {self.duration.iso()} <= " + self.at.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """A rule's end conditions at one instant (None: the rule does not state it).

    `created`: on the record's creation instant (`max_age`).
    `account`: on the owning account's deletion instant (`while_account_active` /
    `after_account_deleted`).
    `post`: on the post's deletion instant (`after_post_deleted`).
    """

    created: Condition | None
    account: Condition | None
    post: Condition | None
    account_trigger: str
    """How the account condition is named in plans: `after_account_deleted` when a grace is
    stated, else `while_account_active`."""

    def as_dict(self) -> dict[str, str]:
        """Trigger name -> the condition in words, for the conditions this rule states."""
        found: dict[str, str] = {}
        if self.created is not None:
            found["max_age"] = "created_at " + self.created.describe()
        if self.account is not None:
            found[self.account_trigger] = "account deleted_at " + self.account.describe()
        if self.post is not None:
            found["after_post_deleted"] = "deleted_at " + self.post.describe()
        return found


def cutoffs_for(rule: RetentionRule, at: datetime) -> Cutoffs:
    """Every end condition of `rule` at `at`."""
    at = at.astimezone(UTC)
    grace = rule.account_grace
    return Cutoffs(
        created=None if rule.max_age is None else Condition(rule.max_age, at),
        account=None if grace is None else Condition(grace, at),
        post=None if rule.after_post_deleted is None else Condition(rule.after_post_deleted, at),
        account_trigger=(
            "after_account_deleted"
            if rule.after_account_deleted is not None
            else "while_account_active"
        ),
    )


def trigger_of(
    cuts: Cutoffs,
    created_at: datetime | None,
    *,
    account_deleted_at: datetime | None = None,
    post_deleted_at: datetime | None = None,
) -> str | None:
    """The first condition (in schema order) under which a record is due, or None (keep).

    1. `max_age` when `created_at + max_age <= at`.
    2. The account condition when the account was deleted and its grace has passed.
    3. `after_post_deleted` when the post was deleted and its grace has passed.
    """
    if cuts.created is not None and cuts.created.holds_for(created_at):
        return "max_age"
    if cuts.account is not None and cuts.account.holds_for(account_deleted_at):
        return cuts.account_trigger
    if cuts.post is not None and cuts.post.holds_for(post_deleted_at):
        return "after_post_deleted"
    return None


def is_due(
    rule: RetentionRule,
    at: datetime,
    created_at: datetime,
    *,
    account_deleted_at: datetime | None = None,
    post_deleted_at: datetime | None = None,
) -> bool:
    """True when the record must be gone at `at`: `rule.expires_at(...) <= at`."""
    end = rule.expires_at(
        created_at, account_deleted_at=account_deleted_at, post_deleted_at=post_deleted_at
    )
    return end is not None and end <= at
