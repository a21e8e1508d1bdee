"""The candidate tables against a row-at-a-time oracle of their documented rule.

`consentry.retention.candidates` builds one Ibis expression per category; its module
docstring and `classify` state the rule. Here that rule is written again, one record at a
time, with the pure functions of `consentry.retention.rules` (`trigger_of`), and both are
run over small random worlds on DuckDB: every category, rule shape (conditions, delete or
anonymise and the fields), hold (category, user, entity, several covering one record) and
the unknown-owner count. `candidate_counts` must be the oracle's counts too, and every
candidate column a string whatever the rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.policy import ANONYMISABLE_FIELDS, RetentionRule
from consentry.retention import HoldSet, cutoffs_for, trigger_of
from consentry.retention.candidates import (
    ANON_PREFIX,
    CANDIDATE_COLUMNS,
    Sources,
    candidate_counts,
    candidates,
    classify,
    flagged,
    hold_tables,
)
from consentry.retention.rules import Cutoffs

AT = datetime(2026, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")
USERS = ("u0", "u1", "u2", "u3")
OWNERS = (*USERS, "u-gone")  # u-gone is in no users table: an unknown owner
CREDENTIALS = ("c0", "c1", "e0")  # e0 is also an entity's name: a direct hold may name it
ENTITIES = ("e0", "e1")
HOLD_IDS = ("h1", "h2", "h3")

# Instants around the durations below (30 days, one month, one second before `AT`), so
# that every condition is drawn due, not due and exactly at its end.
_OFFSETS = (
    timedelta(days=400),
    timedelta(days=31),
    timedelta(days=30),
    timedelta(days=30) - timedelta(microseconds=1),
    timedelta(seconds=1),
    timedelta(0),
    -timedelta(days=1),
)
instants = st.sampled_from([AT - d for d in _OFFSETS])
maybe_instants = st.none() | instants
durations = st.sampled_from(["P30D", "P1M", "PT1S", "PT0S"])


def _text(kind: str) -> st.SearchStrategy[str | None]:
    """A value of an anonymisable field: null, already anonymised (`hash` fields) or not."""
    if kind == "null":
        return st.sampled_from([None, "en"])
    return st.sampled_from([None, f"{ANON_PREFIX}00ff", "plain", "anon"])


@dataclass(frozen=True)
class World:
    users: list[dict[str, Any]]
    posts: list[dict[str, Any]]
    consent: list[dict[str, Any]]
    access: list[dict[str, Any]]
    entities: list[dict[str, Any]]
    lineage: list[dict[str, Any]]
    deliveries: list[dict[str, Any]]


@st.composite
def worlds(draw: st.DrawFn) -> World:
    users = [
        {
            "user_id": u,
            "created_at": draw(instants),
            "deleted_at": draw(maybe_instants),
            "region": draw(_text("hash")),
            "birth_date": draw(st.sampled_from([None, "2001-02-03"])),
        }
        for u in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=4))
    ]
    posts = [
        {
            "post_id": f"p{i}",
            "author_id": draw(st.sampled_from(OWNERS)),
            "created_at": draw(instants),
            "deleted_at": draw(maybe_instants),
            "text": draw(_text("hash")),
            "lang": draw(_text("null")),
        }
        for i in range(draw(st.integers(0, 6)))
    ]
    consent = [
        {"event_id": f"ev{i}", "user_id": draw(st.sampled_from(OWNERS)), "at": draw(instants)}
        for i in range(draw(st.integers(0, 5)))
    ]
    access = [
        {
            "request_id": f"r{i}",
            "credential": draw(st.sampled_from(CREDENTIALS)),
            "ts": draw(instants),
            "endpoint": draw(_text("null")),
        }
        for i in range(draw(st.integers(0, 5)))
    ]
    entities = [
        {
            "entity": draw(st.sampled_from(ENTITIES)),
            "credential": draw(st.sampled_from(CREDENTIALS)),
            "valid_from": draw(maybe_instants),
            "valid_to": draw(maybe_instants),
        }
        for _ in range(draw(st.integers(0, 4)))
    ]
    deliveries = [
        {"delivery_id": f"d{i}", "created_at": draw(instants)}
        for i in range(draw(st.integers(0, 3)))
    ]
    lineage = [
        {"delivery_id": d["delivery_id"], "author_id": a}
        for d in deliveries
        for a in draw(st.lists(st.sampled_from(OWNERS), unique=True, max_size=3))
    ]
    return World(users, posts, consent, access, entities, lineage, deliveries)


_SCHEMAS = {
    "users": pa.schema(
        [
            ("user_id", pa.string()),
            ("created_at", TS),
            ("deleted_at", TS),
            ("region", pa.string()),
            ("birth_date", pa.string()),
        ]
    ),
    "posts": pa.schema(
        [
            ("post_id", pa.string()),
            ("author_id", pa.string()),
            ("created_at", TS),
            ("deleted_at", TS),
            ("text", pa.string()),
            ("lang", pa.string()),
        ]
    ),
    "consent": pa.schema([("event_id", pa.string()), ("user_id", pa.string()), ("at", TS)]),
    "access": pa.schema(
        [
            ("request_id", pa.string()),
            ("credential", pa.string()),
            ("ts", TS),
            ("endpoint", pa.string()),
        ]
    ),
    "entities": pa.schema(
        [
            ("entity", pa.string()),
            ("credential", pa.string()),
            ("valid_from", TS),
            ("valid_to", TS),
        ]
    ),
    "lineage": pa.schema([("delivery_id", pa.string()), ("author_id", pa.string())]),
    "deliveries": pa.schema([("delivery_id", pa.string()), ("created_at", TS)]),
}


def _sources(world: World, holds: HoldSet) -> Sources:
    def table(name: str) -> Any:
        rows = getattr(world, name)
        return ibis.memtable(pa.Table.from_pylist(rows, schema=_SCHEMAS[name]))

    held_users, held_entities = hold_tables(holds)
    return Sources(
        users=table("users"),
        posts=table("posts"),
        consent=table("consent"),
        access_events=table("access"),
        entities=table("entities"),
        lineage=table("lineage"),
        deliveries=table("deliveries"),
        held_users=ibis.memtable(held_users),
        held_entities=ibis.memtable(held_entities),
    )


# -- the oracle: one record at a time --------------------------------------------------------


def _anonymised(record: dict[str, Any], category: str, rule: RetentionRule) -> bool:
    how = ANONYMISABLE_FIELDS[category]
    # A null `hash` field has nothing left to hash: anonymised too.
    return all(
        record[f] is None or (how[f] == "hash" and record[f].startswith(ANON_PREFIX))
        for f in rule.fields
    )


def _owned_hold(world: World, holds: HoldSet, credential: str, ts: datetime) -> str | None:
    owned = [
        holds.entities[e["entity"]]
        for e in world.entities
        if e["credential"] == credential
        and e["entity"] in holds.entities
        and (e["valid_from"] is None or e["valid_from"] <= ts)
        and (e["valid_to"] is None or ts < e["valid_to"])
    ]
    return min(owned) if owned else holds.entities.get(credential)


def _records(
    world: World, category: str, holds: HoldSet, cuts: Cutoffs | None
) -> list[tuple[dict[str, Any], str, str | None, dict[str, Any]]]:
    """Per record: the record, its key, its hold before the category's, and the instants the
    rule's conditions read (`trigger_of`'s arguments)."""
    deleted = {u["user_id"]: u["deleted_at"] for u in world.users}
    found: list[tuple[dict[str, Any], str, str | None, dict[str, Any]]] = []
    if category == "posts":
        for p in world.posts:
            owner = p["author_id"]
            found.append((p, p["post_id"], holds.users.get(owner), {
                "created_at": p["created_at"],
                "account_deleted_at": deleted.get(owner),
                "post_deleted_at": p["deleted_at"],
            }))  # fmt: skip
    elif category == "profile":
        for u in world.users:
            found.append((u, u["user_id"], holds.users.get(u["user_id"]), {
                "created_at": u["created_at"], "account_deleted_at": u["deleted_at"],
            }))  # fmt: skip
    elif category == "consent_evidence":
        for c in world.consent:
            found.append((c, c["event_id"], holds.users.get(c["user_id"]), {
                "created_at": c["at"], "account_deleted_at": deleted.get(c["user_id"]),
            }))  # fmt: skip
    elif category == "access_events":
        for r in world.access:
            hold = _owned_hold(world, holds, r["credential"], r["ts"])
            found.append((r, r["request_id"], hold, {"created_at": r["ts"]}))
    else:
        for d in world.deliveries:
            authors = [
                holds.users[x["author_id"]]
                for x in world.lineage
                if x["delivery_id"] == d["delivery_id"] and x["author_id"] in holds.users
            ]
            found.append((d, d["delivery_id"], min(authors) if authors else None, {
                "created_at": d["created_at"],
            }))  # fmt: skip
    return found


_OWNER = {"posts": "author_id", "consent_evidence": "user_id"}


def expected(
    world: World, category: str, rule: RetentionRule | None, holds: HoldSet, owners: bool
) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    """key -> (action, trigger, hold, note), as the module's docstring and `classify` say."""
    cuts = None if rule is None else cutoffs_for(rule, AT)
    known = {u["user_id"] for u in world.users}
    answer: dict[str, tuple[str, str | None, str | None, str | None]] = {}
    for record, key, hold, instants_ in _records(world, category, holds, cuts):
        hold = holds.categories.get(category, hold)
        account_rule = cuts is not None and cuts.account is not None
        owner = _OWNER.get(category)
        note = (
            "unknown_owner"
            if owners and account_rule and owner is not None and record[owner] not in known
            else None
        )
        trigger = None if cuts is None else trigger_of(cuts, **instants_)
        if rule is None or trigger is None:
            answer[key] = ("keep", None, None, note)
        elif hold is not None:
            answer[key] = ("held", trigger, hold, note)
        elif rule.action == "anonymise" and _anonymised(record, category, rule):
            answer[key] = ("done", trigger, None, note)
        else:
            answer[key] = (rule.action, trigger, None, note)
    return answer


# -- rules and holds --------------------------------------------------------------------------


@st.composite
def rules(draw: st.DrawFn, category: str) -> RetentionRule | None:
    """A rule valid for `category` (None: a gap, no rule at all)."""
    if draw(st.integers(0, 9)) == 0:
        return None
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["max_age"] = draw(durations.filter(lambda d: d != "PT0S"))
    if category in ("posts", "profile", "consent_evidence"):
        account = draw(st.sampled_from(["none", "while_active", "grace", "both"]))
        if account in ("while_active", "both"):
            spec["while_account_active"] = True
        if account in ("grace", "both"):
            spec["after_account_deleted"] = draw(durations)
    if category == "posts" and draw(st.booleans()):
        spec["after_post_deleted"] = draw(durations)
    if not spec:
        spec["max_age"] = "P30D"
    if category in ANONYMISABLE_FIELDS and draw(st.booleans()):
        spec["action"] = "anonymise"
        fields = st.sampled_from(sorted(ANONYMISABLE_FIELDS[category]))
        spec["fields"] = draw(st.lists(fields, min_size=1, unique=True))
    return RetentionRule.model_validate(spec)


@st.composite
def hold_sets(draw: st.DrawFn, category: str) -> HoldSet:
    ids = st.sampled_from(HOLD_IDS)
    categories = {category: draw(ids)} if draw(st.integers(0, 4)) == 0 else {}
    users = draw(st.dictionaries(st.sampled_from(OWNERS), ids, max_size=3))
    entities = draw(st.dictionaries(st.sampled_from((*ENTITIES, "c1")), ids, max_size=3))
    return HoldSet(at=AT, categories=categories, users=users, entities=entities)


CATEGORIES = ("posts", "profile", "consent_evidence", "access_events", "deliveries")


def _run(
    world: World, category: str, rule: RetentionRule | None, holds: HoldSet, owners: bool
) -> None:
    backend = ibis.duckdb.connect()
    src = _sources(world, holds)
    cuts = None if rule is None else cutoffs_for(rule, AT)
    table = backend.to_pyarrow(candidates(src, category, rule, cuts, holds, owners=owners))
    assert table.schema == pa.schema([(c, pa.string()) for c in CANDIDATE_COLUMNS])
    want = expected(world, category, rule, holds, owners)
    assert table.num_rows == len(want)  # one row per record: no join repeats one
    assert _by_key(table) == want
    counts = backend.to_pyarrow(candidate_counts(src, category, rule, cuts, holds, owners=owners))
    assert _counted(counts) == dict(Counter(want.values()))
    if not owners:
        # Not noting unknown owners is the default of every entry point.
        assert _by_key(backend.to_pyarrow(candidates(src, category, rule, cuts, holds))) == want
        counted = backend.to_pyarrow(candidate_counts(src, category, rule, cuts, holds))
        assert _counted(counted) == dict(Counter(want.values()))
        flags = classify(flagged(src, category, rule, cuts, holds))
        assert _by_key(backend.to_pyarrow(flags)) == want


def _by_key(table: pa.Table) -> dict[str, tuple[Any, ...]]:
    return {r["key"]: (r["action"], r["trigger"], r["hold"], r["note"]) for r in table.to_pylist()}


def _counted(table: pa.Table) -> dict[tuple[Any, ...], int]:
    return {(r["action"], r["trigger"], r["hold"], r["note"]): r["n"] for r in table.to_pylist()}


@pytest.mark.parametrize("category", CATEGORIES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_candidates_follow_the_rule_record_by_record(category: str, data: st.DataObject) -> None:
    world = data.draw(worlds(), "world")
    rule = data.draw(rules(category), "rule")
    holds = data.draw(hold_sets(category), "holds")
    owners = data.draw(st.booleans(), "owners")
    _run(world, category, rule, holds, owners)


# Fixed cases, so that no seed decides whether each branch of the rule is met.
def _post(
    post_id: str,
    author: str,
    created: datetime,
    deleted: datetime | None,
    text: str | None,
    lang: str | None,
) -> dict[str, Any]:
    return {"post_id": post_id, "author_id": author, "created_at": created,
            "deleted_at": deleted, "text": text, "lang": lang}  # fmt: skip


_U = {"created_at": AT - timedelta(days=400), "region": None, "birth_date": None}
_FIXED = World(
    users=[
        {"user_id": "u0", "deleted_at": AT - timedelta(days=31), **_U},
        {"user_id": "u1", "deleted_at": None, **_U},
        {"user_id": "u2", "deleted_at": AT - timedelta(days=31), **_U, "region": "anon:1"},
    ],
    posts=[
        # due (post deleted), anonymised text and lang; due, text still plain; not due
        _post("p0", "u1", AT, AT - timedelta(days=31), "anon:ab", None),
        _post("p1", "u1", AT, AT - timedelta(days=31), "plain", None),
        _post("p2", "u1", AT, None, "plain", "en"),
        # due by its author's deletion; its author is held in the held cases
        _post("p3", "u0", AT, None, "plain", None),
        # an unknown owner, due by age only
        _post("p4", "u-gone", AT - timedelta(days=400), None, None, "en"),
    ],
    consent=[{"event_id": "ev0", "user_id": "u-gone", "at": AT - timedelta(days=400)}],
    access=[
        {"request_id": "r0", "credential": "c0", "ts": AT - timedelta(days=40), "endpoint": None},
        {"request_id": "r1", "credential": "e0", "ts": AT - timedelta(days=40), "endpoint": "x"},
        # c1 is e1's from AT - 10 days until AT - 5 days: at its start, at its end, before.
        {"request_id": "r2", "credential": "c1", "ts": AT - timedelta(days=10), "endpoint": None},
        {"request_id": "r3", "credential": "c1", "ts": AT - timedelta(days=5), "endpoint": None},
        {"request_id": "r4", "credential": "c1", "ts": AT - timedelta(days=20), "endpoint": None},
    ],
    entities=[
        {"entity": "e1", "credential": "c0", "valid_from": None, "valid_to": None},
        {"entity": "e0", "credential": "c0", "valid_from": None, "valid_to": None},
        {
            "entity": "e1",
            "credential": "c1",
            "valid_from": AT - timedelta(days=10),
            "valid_to": AT - timedelta(days=5),
        },
    ],
    lineage=[
        {"delivery_id": "d0", "author_id": "u1"},
        {"delivery_id": "d0", "author_id": "u0"},
    ],
    deliveries=[{"delivery_id": "d0", "created_at": AT - timedelta(days=400)}],
)
_POSTS_ANON = RetentionRule.model_validate(
    {"while_account_active": True, "after_post_deleted": "P30D", "max_age": "P1M",
     "action": "anonymise", "fields": ["text", "lang"]}
)  # fmt: skip
_NO_HOLDS = HoldSet(at=AT)
_EVERY_REQUEST = RetentionRule.model_validate({"max_age": "PT1S"})
_POSTS_HELD = HoldSet(at=AT, categories={"posts": "h3"}, users={"u0": "h2"})


@pytest.mark.parametrize(
    ("category", "rule", "holds", "owners"),
    [
        ("posts", _POSTS_ANON, _NO_HOLDS, True),
        ("posts", _POSTS_ANON, HoldSet(at=AT, users={"u0": "h2", "u1": "h1"}), False),
        ("posts", _POSTS_ANON, _POSTS_HELD, True),
        ("posts", None, _NO_HOLDS, True),
        (
            "profile",
            RetentionRule.model_validate(
                {"while_account_active": True, "action": "anonymise", "fields": ["region"]}
            ),
            _NO_HOLDS,
            False,
        ),
        (
            "profile",
            RetentionRule.model_validate(
                {"while_account_active": True, "action": "anonymise", "fields": ["birth_date"]}
            ),
            _NO_HOLDS,
            False,
        ),
        (
            "consent_evidence",
            RetentionRule.model_validate({"while_account_active": True, "max_age": "P30D"}),
            HoldSet(at=AT, categories={"consent_evidence": "h1"}),
            True,
        ),
        (
            "access_events",
            RetentionRule.model_validate({"max_age": "P30D"}),
            HoldSet(at=AT, entities={"e1": "h3", "e0": "h2"}),
            False,
        ),
        ("access_events", _EVERY_REQUEST, HoldSet(at=AT, entities={"e1": "h3", "e0": "h2"}), False),
        ("access_events", _EVERY_REQUEST, HoldSet(at=AT, entities={"e0": "h2"}), False),
        (
            "access_events",
            RetentionRule.model_validate(
                {"max_age": "P30D", "action": "anonymise", "fields": ["endpoint"]}
            ),
            _NO_HOLDS,
            False,
        ),
        (
            "deliveries",
            RetentionRule.model_validate({"max_age": "P30D"}),
            HoldSet(at=AT, users={"u0": "h2", "u1": "h1"}),
            False,
        ),
        ("deliveries", RetentionRule.model_validate({"max_age": "P30D"}), _NO_HOLDS, False),
    ],
)
def test_fixed_cases_of_every_branch(
    category: str, rule: RetentionRule | None, holds: HoldSet, owners: bool
) -> None:
    _run(_FIXED, category, rule, holds, owners)


def test_the_fixed_posts_case_says_what_the_rule_says() -> None:
    """The oracle itself, held to hand-written answers (an oracle that agreed with a wrong
    engine would pass the property test)."""
    assert expected(_FIXED, "posts", _POSTS_ANON, _NO_HOLDS, owners=True) == {
        "p0": ("done", "after_post_deleted", None, None),
        "p1": ("anonymise", "after_post_deleted", None, None),
        "p2": ("keep", None, None, None),
        "p3": ("anonymise", "while_account_active", None, None),
        "p4": ("anonymise", "max_age", None, "unknown_owner"),
    }
    assert expected(_FIXED, "posts", _POSTS_ANON, _POSTS_HELD, owners=False)["p3"] == (
        "held", "while_account_active", "h3", None,
    )  # fmt: skip
    entity_holds = HoldSet(at=AT, entities={"e1": "h3", "e0": "h2"})
    access = RetentionRule.model_validate({"max_age": "P30D"})
    assert expected(_FIXED, "access_events", access, entity_holds, owners=False) == {
        "r0": ("held", "max_age", "h2", None),  # owned by e0 and e1: the smaller hold id
        "r1": ("held", "max_age", "h2", None),  # the credential named as the entity e0
        "r2": ("keep", None, None, None),
        "r3": ("keep", None, None, None),
        "r4": ("keep", None, None, None),
    }
    # An entity owns a credential from valid_from (closed) to valid_to (open).
    answers = expected(_FIXED, "access_events", _EVERY_REQUEST, entity_holds, owners=False)
    assert [answers[r] for r in ("r2", "r3", "r4")] == [
        ("held", "max_age", "h3", None),
        ("delete", "max_age", None, None),
        ("delete", "max_age", None, None),
    ]
    only_e0 = HoldSet(at=AT, entities={"e0": "h2"})
    answers = expected(_FIXED, "access_events", _EVERY_REQUEST, only_e0, owners=False)
    assert answers["r2"] == ("delete", "max_age", None, None)  # e1 owns c1, and e1 is not held
