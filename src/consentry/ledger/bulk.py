"""Bulk consent resolution: millions of users at one instant, as one Ibis expression.

The expression runs on whichever backend holds the tables (DuckDB embedded, or Spark) and
gives, row for row, the answers of the scalar `resolve_consent` (a property test holds the
two together). No Python loop touches a user.
"""

from __future__ import annotations

from datetime import UTC, datetime

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from consentry.ledger.rules import ConsentRule, minor_birth_cutoff
from consentry.policy import Choice, PolicyFile

__all__ = ["DECISION_COLUMNS", "resolve_consent_bulk"]

DECISION_COLUMNS = ("user_id", "decision", "rule", "policy_version", "since")
"""The columns `resolve_consent_bulk` returns, in order."""


def resolve_consent_bulk(
    policy: PolicyFile,
    users: ir.Table,
    events: ir.Table,
    purpose_key: str,
    at: datetime,
) -> ir.Table:
    """Resolve `purpose_key` at `at` for every row of `users`.

    `users` needs `user_id`, `region` (nullable) and `birth_date` (nullable date);
    `events` needs `user_id`, `purpose`, `choice`, `at`, `source`, `event_id`.
    The rules are those of `resolve_consent`, applied as one CASE per user:

    1. No version in force, or the purpose absent from it -> deny, `purpose_not_in_policy`
       (a constant column: nothing else is read).
    2. birth_date > the cutoff from `minor_birth_cutoff` and `minors: deny` -> `minor`;
       null birth_date and `unknown_age: deny` -> `unknown_age`.
    3. The latest event with `at <= at` per user (ties: larger event_id), found with one
       window over the purpose's events -> `explicit` or `gpc`.
    4. The region default of the user's upper-cased region, looked up by a join with a small
       table of the country codes the purpose's region defaults cover -> `region_default`,
       else the purpose default -> `default`.
    """
    if at.tzinfo is None:
        raise ValueError("resolve_consent_bulk needs an aware instant")
    at = at.astimezone(UTC)
    version = policy.version_at(at)
    purpose = version.purpose(purpose_key) if version else None
    version_name = ibis.literal(version.version if version else None, type="string")
    effective = ibis.literal(
        version.effective_from if version else None, type="timestamp('UTC', 6)"
    )
    if version is None or purpose is None:
        return users.select(
            user_id=users.user_id,
            decision=ibis.literal(Choice.DENY.value),
            rule=ibis.literal(ConsentRule.PURPOSE_NOT_IN_POLICY.value),
            policy_version=version_name,
            since=effective,
        )

    at_literal = ibis.literal(at, type="timestamp('UTC', 6)")
    relevant = events.filter((events.purpose == purpose_key) & (events.at <= at_literal)).select(
        "user_id", "choice", "at", "source", "event_id"
    )
    ranked = relevant.mutate(
        _rank=ibis.row_number().over(
            group_by=relevant.user_id,
            order_by=[relevant.at.desc(), relevant.event_id.desc()],
        )
    )
    latest = ranked.filter(ranked._rank == 0).select(
        ev_user=ranked.user_id,
        ev_choice=ranked.choice,
        ev_at=ranked.at,
        ev_source=ranked.source,
    )
    # Region defaults as a join with a table of (code, choice) rather than IN lists inside
    # the CASEs: an IN list of ~30 codes is ~30 string comparisons per user and per CASE,
    # which dominated the cost at millions of users; the join hashes each region once.
    # The codes are a dict's keys, so the join never multiplies a user.
    regional = purpose.resolved_region_defaults()
    facts = users.select("user_id", "region", "birth_date")
    if regional:
        codes = ibis.memtable(
            pa.table(
                {
                    "rg_code": pa.array(list(regional), pa.string()),
                    "rg_choice": pa.array([c.value for c in regional.values()], pa.string()),
                }
            )
        )
        facts = facts.left_join(codes, facts.region.upper() == codes.rg_code).select(
            "user_id", "birth_date", "rg_choice"
        )
    else:
        facts = facts.select("user_id", "birth_date", rg_choice=ibis.literal(None, type="string"))
    joined = facts.left_join(latest, facts.user_id == latest.ev_user)

    cutoff = ibis.literal(minor_birth_cutoff(at, version.age_of_majority), type="date")
    is_minor = joined.birth_date.notnull() & (joined.birth_date > cutoff)
    unknown_age = joined.birth_date.isnull()
    has_event = joined.ev_choice.notnull()
    covered = joined.rg_choice.notnull()
    region_choice = joined.rg_choice

    minor_blocks = purpose.minors is Choice.DENY
    unknown_blocks = purpose.unknown_age is Choice.DENY
    blocked_minor = is_minor if minor_blocks else ibis.literal(False)
    blocked_unknown = unknown_age if unknown_blocks else ibis.literal(False)

    decision = ibis.cases(
        (blocked_unknown, Choice.DENY.value),
        (blocked_minor, Choice.DENY.value),
        (has_event, joined.ev_choice),
        (covered, region_choice),
        else_=purpose.default.value,
    )
    rule = ibis.cases(
        (blocked_unknown, ConsentRule.UNKNOWN_AGE.value),
        (blocked_minor, ConsentRule.MINOR.value),
        (has_event & (joined.ev_source == "gpc"), ConsentRule.GPC.value),
        (has_event, ConsentRule.EXPLICIT.value),
        (covered, ConsentRule.REGION_DEFAULT.value),
        else_=ConsentRule.DEFAULT.value,
    )
    since = ibis.cases(
        (blocked_unknown | blocked_minor, effective),
        (has_event, joined.ev_at),
        else_=effective,
    )
    return joined.select(
        user_id=joined.user_id,
        decision=decision,
        rule=rule,
        policy_version=version_name,
        since=since,
    )
