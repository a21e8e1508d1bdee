"""Which records each retention rule reaches: one Ibis expression per data category.

The same expressions run on DuckDB and on Spark (the planner counts them, the executor
materialises them), so "what the plan says" and "what apply does" are one piece of code.
Every candidate table has one row per record of its category, with these columns:

- `key`: the record's id (post_id, user_id, event_id, request_id, delivery_id).
- `action`: `delete`, `anonymise`, `held` (due, but a legal hold covers it), `done` (due
  for anonymisation and already anonymised) or `keep` (not due).
- `trigger`: the first end condition that made it due (`max_age`, `while_account_active`,
  `after_account_deleted`, `after_post_deleted`); null when not due.
- `hold`: the covering hold's id when `action` is `held`.
- `note`: `unknown_owner` when the record's account is missing from `users` (only counted
  on request: the account condition cannot be checked, so only the others apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ibis
import pyarrow as pa

from consentry.policy.model import ANONYMISABLE_FIELDS, RetentionRule
from consentry.retention.holds import HoldSet
from consentry.retention.rules import Condition, Cutoffs

if TYPE_CHECKING:
    import ibis.expr.types as ir

__all__ = [
    "ANON_PREFIX",
    "CANDIDATE_COLUMNS",
    "LAKE_CATEGORIES",
    "Flagged",
    "Sources",
    "candidate_counts",
    "candidates",
    "classify",
    "flagged",
    "hold_tables",
]

ANON_PREFIX = "anon:"
"""Anonymised text values start with this, followed by a keyed hash (never re-hashed)."""

CANDIDATE_COLUMNS = ("key", "action", "trigger", "hold", "note")

LAKE_CATEGORIES: dict[str, str] = {
    "posts": "posts",
    "profile": "users",
    "consent_evidence": "consent_events",
    "access_events": "access_events",
}
"""Category -> the lake table holding its records (deliveries: `delivery_lineage` plus the
delivery directories; audit: the control plane)."""

_HELD_USERS = pa.schema([("user_id", pa.string()), ("hold_id", pa.string())])
_HELD_ENTITIES = pa.schema([("entity", pa.string()), ("hold_id", pa.string())])


def hold_tables(holds: HoldSet) -> tuple[pa.Table, pa.Table]:
    """The user and entity holds of `holds` as Arrow tables (one row per user / entity)."""
    users = pa.table(
        {"user_id": list(holds.users), "hold_id": list(holds.users.values())}, schema=_HELD_USERS
    )
    entities = pa.table(
        {"entity": list(holds.entities), "hold_id": list(holds.entities.values())},
        schema=_HELD_ENTITIES,
    )
    return users, entities


@dataclass(frozen=True, slots=True)
class Sources:
    """The tables the rules read, on one backend.

    `consent` is every consent event known to the lake or the ledger (`event_id`, `user_id`,
    `at`); `deliveries` is one row per delivery directory (`delivery_id`, `created_at`);
    `held_users` / `held_entities` come from `hold_tables`.
    """

    users: ir.Table
    posts: ir.Table
    consent: ir.Table
    access_events: ir.Table
    entities: ir.Table
    lineage: ir.Table
    deliveries: ir.Table
    held_users: ir.Table
    held_entities: ir.Table


def _due(column: ir.TimestampValue, condition: Condition) -> ir.BooleanValue:
    """`column + duration <= at`, false when the column is null.

    An exact duration compares with its cut-off (a constant); one with months or years adds
    the interval in the engine, months first, as `Duration.add_to` does.
    """
    if condition.cutoff is not None:
        test = column <= ibis.literal(condition.cutoff, type="timestamp('UTC')")
    else:
        moved = column
        if condition.duration.calendar_months:
            moved = moved + ibis.interval(months=condition.duration.calendar_months)
        if condition.duration.fixed_seconds:
            moved = moved + ibis.interval(seconds=condition.duration.fixed_seconds)
        test = moved <= ibis.literal(condition.at, type="timestamp('UTC')")
    return test.fill_null(False)


def _due_conditions(
    cuts: Cutoffs | None,
    *,
    created: ir.TimestampValue,
    account: ir.TimestampValue | None = None,
    post: ir.TimestampValue | None = None,
) -> list[tuple[ir.BooleanValue, str]]:
    """The rule's due tests for one category, each with the trigger it reports.

    1. `max_age` on the row's creation instant, when the rule has it.
    2. The account trigger on the owner's deletion instant, when the rule has it and the
       category has an owner (`account` given).
    3. `after_post_deleted` on the post's deletion instant, for posts (`post` given).
    """
    if cuts is None:
        return []
    due: list[tuple[ir.BooleanValue, str]] = []
    if cuts.created is not None:
        due.append((_due(created, cuts.created), "max_age"))
    if cuts.account is not None and account is not None:
        due.append((_due(account, cuts.account), cuts.account_trigger))
    if cuts.post is not None and post is not None:
        due.append((_due(post, cuts.post), "after_post_deleted"))
    return due


def _anonymised(rows: ir.Table, category: str, rule: RetentionRule) -> ir.BooleanValue:
    """True where every field the rule names is already anonymised (null, or `anon:…`)."""
    how = ANONYMISABLE_FIELDS[category]
    done: ir.BooleanValue = ibis.literal(True)
    for name in rule.fields:
        column = rows[name]
        if how[name] == "null":
            done = done & column.isnull()
        else:
            done = done & column.cast("string").startswith(ANON_PREFIX).fill_null(True)
    return done


@dataclass(frozen=True, slots=True)
class Flagged:
    """Per record: its key, one boolean per stated end condition (`_d0`, `_d1`, … named by
    `labels`), the covering hold (`_hold`), the note and whether it is already anonymised
    (`_anon`). `classify` turns these into the candidate columns."""

    table: ir.Table
    labels: tuple[str, ...]
    rule: RetentionRule | None


def _flag(
    rows: ir.Table,
    *,
    category: str,
    rule: RetentionRule | None,
    key: ir.Value,
    due: list[tuple[ir.BooleanValue, str]],
    hold: ir.StringValue,
    note: ir.StringValue,
) -> Flagged:
    anonymised = (
        _anonymised(rows, category, rule)
        if rule is not None and rule.action == "anonymise"
        else ibis.literal(False)
    )
    if rule is None:
        due = []
    return Flagged(
        rows.select(
            key=key.cast("string"),
            **{f"_d{i}": condition for i, (condition, _) in enumerate(due)},
            _hold=hold,
            note=note,
            _anon=anonymised,
        ),
        tuple(label for _, label in due),
        rule,
    )


def classify(
    flagged: Flagged, table: ir.Table | None = None, keep: Sequence[str] = ("key",)
) -> ir.Table:
    """The candidate columns from the flags (of `flagged.table`, or of `table` — e.g. the
    flags grouped and counted — carrying the columns named in `keep`).

    1. Not due under any condition (or no rule: a gap): `keep`.
    2. Due and covered by an active hold: `held` — holds always win.
    3. Due for anonymisation and already anonymised: `done` (applying twice changes nothing).
    4. Otherwise the rule's action.
    """
    rows = flagged.table if table is None else table
    null = ibis.null("string")
    carried = {name: rows[name] for name in keep}
    rule = flagged.rule
    if rule is None or not flagged.labels:
        return rows.select(
            **carried, action=ibis.literal("keep"), trigger=null, hold=null, note=rows.note
        )
    due = [(rows[f"_d{i}"], label) for i, label in enumerate(flagged.labels)]
    any_due: ir.BooleanValue = due[0][0]
    for condition, _ in due[1:]:
        any_due = any_due | condition
    hold = rows._hold
    branches: list[tuple[ir.BooleanValue, str]] = [(~any_due, "keep"), (hold.notnull(), "held")]
    if rule.action == "anonymise":
        branches.append((rows._anon, "done"))
    return rows.select(
        **carried,
        action=ibis.cases(*branches, else_=ibis.literal(rule.action)),
        trigger=ibis.ifelse(any_due, ibis.cases(*due, else_=null), null),
        hold=ibis.ifelse(any_due & hold.notnull(), hold, null),
        note=rows.note,
    )


def _category_hold(holds: HoldSet, category: str) -> ir.StringValue | None:
    found = holds.categories.get(category)
    return None if found is None else ibis.literal(found, type="string")


def _with_user_facts(
    rows: ir.Table,
    owner: str,
    src: Sources,
    holds: HoldSet,
    *,
    need_account: bool,
    owners: bool,
) -> ir.Table:
    """`rows` plus `_acct_deleted` (the owner's deletion instant), `_acct_known` (with
    `owners`: whether the owner is in `users`) and `_user_hold`.

    Joins only what the rule needs, each on a unique key (no row is repeated): the deleted
    accounts when an account condition exists (all accounts only when `owners` asks for
    the unknown-owner count: a join with every account costs far more than one with the
    deleted ones), and the held users when any user hold is active.
    """
    out = rows
    if need_account:
        users = src.users
        if not owners:
            users = users.filter(users.deleted_at.notnull())
        facts = users.select(_uid=users.user_id, _acct_deleted=users.deleted_at)
        out = out.left_join(facts, out[owner] == facts._uid)
        out = out.mutate(_acct_known=out._uid.notnull()).drop("_uid")
    if holds.users:
        held = src.held_users.select(
            _huid=src.held_users.user_id, _user_hold=src.held_users.hold_id
        )
        out = out.left_join(held, out[owner] == held._huid).drop("_huid")
    else:
        out = out.mutate(_user_hold=ibis.null("string"))
    return out


def _owner_note(rows: ir.Table, need_account: bool, owners: bool) -> ir.StringValue:
    null = ibis.null("string")
    if not (need_account and owners):
        return null
    return ibis.ifelse(rows._acct_known, null, ibis.literal("unknown_owner"))


def _hold_expr(holds: HoldSet, category: str, fallback: ir.StringValue) -> ir.StringValue:
    constant = _category_hold(holds, category)
    return fallback if constant is None else constant


def _posts(
    src: Sources, rule: RetentionRule | None, cuts: Cutoffs | None, holds: HoldSet, owners: bool
) -> Flagged:
    need_account = cuts is not None and cuts.account is not None
    rows = _with_user_facts(
        src.posts, "author_id", src, holds, need_account=need_account, owners=owners
    )
    due = _due_conditions(
        cuts,
        created=rows.created_at,
        account=rows._acct_deleted if need_account else None,
        post=rows.deleted_at,
    )
    return _flag(
        rows,
        category="posts",
        rule=rule,
        key=rows.post_id,
        due=due,
        hold=_hold_expr(holds, "posts", rows._user_hold),
        note=_owner_note(rows, need_account, owners),
    )


def _profile(
    src: Sources, rule: RetentionRule | None, cuts: Cutoffs | None, holds: HoldSet, owners: bool
) -> Flagged:
    rows = _with_user_facts(src.users, "user_id", src, holds, need_account=False, owners=False)
    due = _due_conditions(cuts, created=rows.created_at, account=rows.deleted_at)
    return _flag(
        rows,
        category="profile",
        rule=rule,
        key=rows.user_id,
        due=due,
        hold=_hold_expr(holds, "profile", rows._user_hold),
        note=ibis.null("string"),
    )


def _consent(
    src: Sources, rule: RetentionRule | None, cuts: Cutoffs | None, holds: HoldSet, owners: bool
) -> Flagged:
    need_account = cuts is not None and cuts.account is not None
    rows = _with_user_facts(
        src.consent, "user_id", src, holds, need_account=need_account, owners=owners
    )
    due = _due_conditions(
        cuts, created=rows.at, account=rows._acct_deleted if need_account else None
    )
    return _flag(
        rows,
        category="consent_evidence",
        rule=rule,
        key=rows.event_id,
        due=due,
        hold=_hold_expr(holds, "consent_evidence", rows._user_hold),
        note=_owner_note(rows, need_account, owners),
    )


def _access(
    src: Sources, rule: RetentionRule | None, cuts: Cutoffs | None, holds: HoldSet, owners: bool
) -> Flagged:
    rows = src.access_events
    entity_hold: ir.StringValue = ibis.null("string")
    if holds.entities:
        # A hold on an entity covers the credentials it owned when each request was made
        # (exact credentials; CIDR ranges are not expanded), and a credential named as the
        # entity itself (an unmapped credential is its own entity).
        held = src.held_entities
        owned = src.entities.join(held, src.entities.entity == held.entity).select(
            _cred=src.entities.credential,
            _from=src.entities.valid_from,
            _to=src.entities.valid_to,
            _hid=held.hold_id,
        )
        probe = rows.select(_rid=rows.request_id, _c=rows.credential, _ts=rows.ts)
        matched = (
            probe.join(
                owned,
                [
                    probe._c == owned._cred,
                    owned._from.isnull() | (owned._from <= probe._ts),
                    owned._to.isnull() | (probe._ts < owned._to),
                ],
            )
            .group_by("_rid")
            .agg(_owned_hold=ibis._._hid.min())
        )
        direct = held.select(_dcred=held.entity, _direct_hold=held.hold_id)
        rows = rows.left_join(matched, rows.request_id == matched._rid).drop("_rid")
        rows = rows.left_join(direct, rows.credential == direct._dcred).drop("_dcred")
        entity_hold = rows._owned_hold.coalesce(rows._direct_hold)
    due = _due_conditions(cuts, created=rows.ts)
    return _flag(
        rows,
        category="access_events",
        rule=rule,
        key=rows.request_id,
        due=due,
        hold=_hold_expr(holds, "access_events", entity_hold),
        note=ibis.null("string"),
    )


def _deliveries(
    src: Sources, rule: RetentionRule | None, cuts: Cutoffs | None, holds: HoldSet, owners: bool
) -> Flagged:
    rows = src.deliveries
    user_hold: ir.StringValue = ibis.null("string")
    if holds.users:
        # A delivery is one signed unit: a hold on any user whose posts it holds keeps it whole.
        lineage, held = src.lineage, src.held_users
        covered = (
            lineage.join(held, lineage.author_id == held.user_id)
            .group_by(_lid=lineage.delivery_id)
            .agg(_user_hold=held.hold_id.min())
        )
        rows = rows.left_join(covered, rows.delivery_id == covered._lid).drop("_lid")
        user_hold = rows._user_hold
    due = _due_conditions(cuts, created=rows.created_at)
    return _flag(
        rows,
        category="deliveries",
        rule=rule,
        key=rows.delivery_id,
        due=due,
        hold=_hold_expr(holds, "deliveries", user_hold),
        note=ibis.null("string"),
    )


_BUILDERS = {
    "posts": _posts,
    "profile": _profile,
    "consent_evidence": _consent,
    "access_events": _access,
    "deliveries": _deliveries,
}


def flagged(
    src: Sources,
    category: str,
    rule: RetentionRule | None,
    cuts: Cutoffs | None,
    holds: HoldSet,
    *,
    owners: bool = False,
) -> Flagged:
    """The flags of every record of `category` (see `Flagged`); `rule` None (a gap) flags
    nothing due. `owners` also notes records whose account is missing from `users`."""
    return _BUILDERS[category](src, rule, cuts, holds, owners)


def candidates(
    src: Sources,
    category: str,
    rule: RetentionRule | None,
    cuts: Cutoffs | None,
    holds: HoldSet,
    *,
    owners: bool = False,
) -> ir.Table:
    """The candidate table of `category` (columns `CANDIDATE_COLUMNS`, one row per record).

    The audit log lives in the control plane and is counted there (see
    `consentry.retention.plan`).
    """
    return classify(flagged(src, category, rule, cuts, holds, owners=owners))


def candidate_counts(
    src: Sources,
    category: str,
    rule: RetentionRule | None,
    cuts: Cutoffs | None,
    holds: HoldSet,
    *,
    owners: bool = False,
) -> ir.Table:
    """(action, trigger, hold, note) -> records `n`: the flags are grouped first (a few
    booleans per row) and classified after, by the same `classify` — so counting costs a
    scan and a group-by, and gives exactly what `candidates` would."""
    flags = flagged(src, category, rule, cuts, holds, owners=owners)
    columns = [c for c in flags.table.columns if c != "key"]
    grouped = flags.table.group_by(columns).agg(n=ibis._.count())
    classified = classify(flags, grouped, keep=("n",))
    return classified.group_by(["action", "trigger", "hold", "note"]).agg(n=classified.n.sum())
