"""The eligibility expression: every reason code, their order, boundaries and consent rules.

Run on in-memory DuckDB tables; the build and `consentry explain` evaluate the very same
expression over the lake (tests/delivery/test_build.py, test_cli_deliver.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import ibis
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.delivery.eligibility import (
    REASON_ORDER,
    EligibilityReason,
    LicenceScope,
    eligibility,
    reasons_of,
)
from consentry.engine import connect
from consentry.policy import load_policy
from consentry.settings import DEFAULT_POLICY_FILE
from tests.delivery.conftest import (
    AS_OF,
    THIRD,
    WORLD_POSTS,
    eu_scope,
    expected_reasons,
    world_events,
    world_posts,
    world_users,
)

POLICY = load_policy(DEFAULT_POLICY_FILE)
R = EligibilityReason
UTC_TS = pa.timestamp("us", tz="UTC")
EVENT_COLUMNS = ["user_id", "purpose", "choice", "at", "source", "event_id"]


@pytest.fixture(scope="module")
def backend() -> Any:
    return connect("duckdb")


def evaluate(
    backend: Any,
    posts: pa.Table,
    users: pa.Table,
    events: pa.Table,
    scope: LicenceScope,
    as_of: datetime = AS_OF,
) -> dict[str, dict[str, Any]]:
    """post_id -> the evaluated row."""
    expr = eligibility(
        POLICY,
        ibis.memtable(posts),
        ibis.memtable(users),
        ibis.memtable(events.select(EVENT_COLUMNS)),
        scope,
        as_of,
    )
    return {row["post_id"]: row for row in backend.to_pyarrow(expr).to_pylist()}


def test_reason_order_is_the_documented_one() -> None:
    assert [r.value for r in REASON_ORDER] == [
        "created_after_cutoff",
        "not_public",
        "post_deleted",
        "author_unknown",
        "author_deleted",
        "author_deactivated",
        "author_protected",
        "out_of_scope_region",
        "out_of_scope_language",
        "out_of_scope_period",
        "consent_denied",
    ]


@pytest.mark.parametrize("licensee", ["open", "eu"])
def test_every_post_of_the_world_fails_exactly_its_checks_in_order(
    backend: Any, licensee: str
) -> None:
    scope = LicenceScope.build(THIRD) if licensee == "open" else eu_scope()
    rows = evaluate(backend, world_posts(), world_users(), world_events(), scope)
    expected = expected_reasons(licensee)
    assert set(rows) == set(expected)
    for post_id, reasons in expected.items():
        row = rows[post_id]
        assert reasons_of(row) == reasons, post_id
        assert row["first_reason"] == (reasons[0] if reasons else None), post_id
        assert row["eligible"] is (not reasons), post_id
    assert len(reasons_of(rows["p18"])) >= 3  # several failures, counted under the first
    if licensee == "eu":
        # The scoped licensee sees every reason code as some post's first reason.
        assert {r[0] for r in expected.values() if r} == {r.value for r in REASON_ORDER}


def test_the_consent_rule_goes_with_the_decision(backend: Any) -> None:
    rows = evaluate(
        backend, world_posts(), world_users(), world_events(), LicenceScope.build(THIRD)
    )
    facts = {
        pid: (rows[pid]["consent_decision"], rows[pid]["consent_rule"])
        for pid in ("p02", "p14", "p15", "p16", "p17", "p01", "p07")
    }
    assert facts == {
        "p02": ("allow", "explicit"),  # opted in on 2024-12-01
        "p14": ("deny", "region_default"),  # EU, never asked
        "p15": ("deny", "explicit"),  # opted in, then out before the cut-off
        "p16": ("deny", "region_default"),  # opts in after the cut-off: not yet
        "p17": ("deny", "minor"),
        "p01": ("allow", "default"),
        "p07": ("allow", "default"),  # unknown author: no region, no birth date
    }
    assert rows["p02"]["consent_since"] == datetime(2024, 12, 1, 12, tzinfo=UTC)
    assert rows["p14"]["consent_since"] == datetime(2024, 11, 15, tzinfo=UTC)
    assert {row["policy_version"] for row in rows.values()} == {"2024-11-15"}


def test_before_the_third_party_purpose_existed_every_post_is_denied(backend: Any) -> None:
    before = datetime(2024, 11, 14, 23, 59, 59, tzinfo=UTC)
    early = [p for p in WORLD_POSTS if p.created_at <= before]
    rows = evaluate(
        backend,
        world_posts(early),
        world_users(),
        world_events(),
        LicenceScope.build(THIRD),
        before,
    )
    assert rows
    assert {row["first_reason"] for row in rows.values()} == {R.CONSENT_DENIED.value}
    assert {row["consent_rule"] for row in rows.values()} == {"purpose_not_in_policy"}
    assert {row["policy_version"] for row in rows.values()} == {"2023-09-29"}


# -- one knob per check ----------------------------------------------------------------------

KNOB_AS_OF = datetime(2025, 3, 1, tzinfo=UTC)
KNOB_SCOPE = LicenceScope.build(
    THIRD,
    exclude_regions=["JP"],
    languages=["EN", "de"],
    period_from=datetime(2023, 1, 1, tzinfo=UTC),
    period_to=datetime(2025, 6, 1, tzinfo=UTC),
)
USER_KNOBS = {R.AUTHOR_DELETED, R.AUTHOR_DEACTIVATED, R.AUTHOR_PROTECTED, R.OUT_OF_SCOPE_REGION}
"""Checks that need the author to be known (an unknown author has no region to exclude)."""


@dataclass
class Knobs:
    """One post and its author, with the named checks made to fail and all others pass."""

    failing: frozenset[EligibilityReason]
    post: dict[str, Any] = field(default_factory=dict)
    """Post columns to set after the knobs (for boundary cases)."""
    user: dict[str, Any] = field(default_factory=dict)
    """Author columns to set after the knobs."""


def knob_world(cases: Sequence[Knobs]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Posts, users and events: case i is post `p<i>` by user `u<i>`."""
    posts: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for i, case in enumerate(cases):
        f = case.failing
        after, period = R.CREATED_AFTER_CUTOFF in f, R.OUT_OF_SCOPE_PERIOD in f
        created = {
            (False, False): datetime(2024, 12, 1, 9, 30, tzinfo=UTC),
            (True, False): datetime(2025, 4, 1, tzinfo=UTC),
            (False, True): datetime(2022, 6, 1, tzinfo=UTC),
            (True, True): datetime(2025, 7, 1, tzinfo=UTC),
        }[(after, period)]
        post = {
            "post_id": f"p{i}",
            "author_id": f"u{i}",
            "created_at": created,
            "text": f"post {i}",
            "visibility": "direct" if R.NOT_PUBLIC in f else "public",
            "lang": "fr" if R.OUT_OF_SCOPE_LANGUAGE in f else "en",
            "deleted_at": datetime(2025, 1, 1, tzinfo=UTC) if R.POST_DELETED in f else None,
        }
        user = {
            "user_id": f"u{i}",
            "created_at": datetime(2020, 1, 1, tzinfo=UTC),
            "region": "JP" if R.OUT_OF_SCOPE_REGION in f else "US",
            "birth_date": date(1980, 1, 1),
            "protected": R.AUTHOR_PROTECTED in f,
            "deactivated_at": datetime(2025, 2, 1, tzinfo=UTC)
            if R.AUTHOR_DEACTIVATED in f
            else None,
            "deleted_at": datetime(2025, 1, 1, tzinfo=UTC) if R.AUTHOR_DELETED in f else None,
        }
        post.update(case.post)
        user.update(case.user)
        posts.append(post)
        if R.AUTHOR_UNKNOWN not in f:
            users.append(user)
        if R.CONSENT_DENIED in f:
            events.append(
                {
                    "event_id": f"e{i}",
                    "user_id": f"u{i}",
                    "purpose": THIRD,
                    "choice": "deny",
                    "at": datetime(2024, 12, 15, tzinfo=UTC),
                    "source": "settings",
                }
            )
    schema = {
        "posts": pa.schema(
            [
                ("post_id", pa.string()),
                ("author_id", pa.string()),
                ("created_at", UTC_TS),
                ("text", pa.string()),
                ("visibility", pa.string()),
                ("lang", pa.string()),
                ("deleted_at", UTC_TS),
            ]
        ),
        "users": pa.schema(
            [
                ("user_id", pa.string()),
                ("created_at", UTC_TS),
                ("region", pa.string()),
                ("birth_date", pa.date32()),
                ("protected", pa.bool_()),
                ("deactivated_at", UTC_TS),
                ("deleted_at", UTC_TS),
            ]
        ),
        "events": pa.schema(
            [
                ("event_id", pa.string()),
                ("user_id", pa.string()),
                ("purpose", pa.string()),
                ("choice", pa.string()),
                ("at", UTC_TS),
                ("source", pa.string()),
            ]
        ),
    }
    return (
        pa.Table.from_pylist(posts, schema["posts"]),
        pa.Table.from_pylist(users, schema["users"]),
        pa.Table.from_pylist(events, schema["events"]),
    )


def run_knobs(backend: Any, cases: Sequence[Knobs]) -> list[dict[str, Any]]:
    rows = evaluate(backend, *knob_world(cases), KNOB_SCOPE, KNOB_AS_OF)
    return [rows[f"p{i}"] for i in range(len(cases))]


def ordered(reasons: Iterable[EligibilityReason]) -> list[str]:
    wanted = set(reasons)
    return [r.value for r in REASON_ORDER if r in wanted]


@pytest.fixture(scope="module")
def single_knobs(backend: Any) -> dict[str, dict[str, Any]]:
    """One clean post and one post per reason failing only that check, evaluated at once."""
    cases = [Knobs(frozenset())] + [Knobs(frozenset({r})) for r in EligibilityReason]
    rows = run_knobs(backend, cases)
    return {"clean": rows[0]} | {
        r.value: row for r, row in zip(EligibilityReason, rows[1:], strict=True)
    }


@pytest.mark.parametrize("reason", list(EligibilityReason), ids=lambda r: r.value)
def test_each_reason_code_is_produced_on_its_own(
    single_knobs: dict[str, dict[str, Any]], reason: EligibilityReason
) -> None:
    clean, failing = single_knobs["clean"], single_knobs[reason.value]
    assert clean["eligible"] is True
    assert reasons_of(clean) == []
    assert clean["first_reason"] is None
    assert reasons_of(failing) == [reason.value]
    assert failing["first_reason"] == reason.value
    assert failing["eligible"] is False


def test_a_post_failing_every_check_lists_them_all_in_order(backend: Any) -> None:
    # An unknown author cannot also be deleted, deactivated, protected or out of region.
    known = frozenset(EligibilityReason) - {R.AUTHOR_UNKNOWN}
    unknown = frozenset(EligibilityReason) - USER_KNOBS
    row_known, row_unknown = run_knobs(backend, [Knobs(known), Knobs(unknown)])
    assert reasons_of(row_known) == ordered(known)
    assert reasons_of(row_unknown) == ordered(unknown)
    assert row_known["first_reason"] == row_unknown["first_reason"] == "created_after_cutoff"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.frozensets(st.sampled_from(list(EligibilityReason))).map(
            lambda s: s - USER_KNOBS if R.AUTHOR_UNKNOWN in s else s
        ),
        min_size=1,
        max_size=40,
    )
)
def test_reasons_are_exactly_the_failing_checks_in_order(
    backend: Any, failing: list[frozenset[EligibilityReason]]
) -> None:
    rows = run_knobs(backend, [Knobs(f) for f in failing])
    for f, row in zip(failing, rows, strict=True):
        assert reasons_of(row) == ordered(f)
        assert row["first_reason"] == (ordered(f)[0] if f else None)
        assert row["eligible"] is (not f)


T = KNOB_AS_OF
US = timedelta(microseconds=1)
BOUNDARIES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    ("created exactly at the cut-off", {"created_at": T}, {}, []),
    ("created just after", {"created_at": T + US}, {}, ["created_after_cutoff"]),
    ("post deleted exactly at the cut-off", {"deleted_at": T}, {}, ["post_deleted"]),
    ("post deleted just after", {"deleted_at": T + US}, {}, []),
    ("author deleted exactly at the cut-off", {}, {"deleted_at": T}, ["author_deleted"]),
    ("author deleted just after", {}, {"deleted_at": T + US}, []),
    ("author deactivated exactly at", {}, {"deactivated_at": T}, ["author_deactivated"]),
    ("author deactivated just after", {}, {"deactivated_at": T + US}, []),
    ("created at the period start", {"created_at": datetime(2023, 1, 1, tzinfo=UTC)}, {}, []),
    (
        "created at the period end (exclusive)",
        {"created_at": datetime(2025, 6, 1, tzinfo=UTC)},
        {},
        ["created_after_cutoff", "out_of_scope_period"],
    ),
    (
        "created just before the period",
        {"created_at": datetime(2023, 1, 1, tzinfo=UTC) - US},
        {},
        ["out_of_scope_period"],
    ),
    ("language tag in another case", {"lang": "DE"}, {}, []),
    ("no language", {"lang": None}, {}, ["out_of_scope_language"]),
    ("excluded region in lower case", {}, {"region": "jp"}, ["out_of_scope_region"]),
    ("unlisted is not public", {"visibility": "unlisted"}, {}, ["not_public"]),
    ("protected visibility is not public", {"visibility": "protected"}, {}, ["not_public"]),
    ("a minor", {}, {"birth_date": date(2012, 1, 1)}, ["consent_denied"]),
]


@pytest.fixture(scope="module")
def boundary_rows(backend: Any) -> list[dict[str, Any]]:
    return run_knobs(backend, [Knobs(frozenset(), post, user) for _, post, user, _ in BOUNDARIES])


@pytest.mark.parametrize("index", range(len(BOUNDARIES)), ids=[b[0] for b in BOUNDARIES])
def test_boundaries(boundary_rows: list[dict[str, Any]], index: int) -> None:
    assert reasons_of(boundary_rows[index]) == BOUNDARIES[index][3]


def test_named_regions_leave_out_other_and_unknown_regions(backend: Any) -> None:
    scope = LicenceScope.build(THIRD, regions=["eu", "NO"], exclude_regions=["fr"])
    cases = [
        Knobs(frozenset(), user={"region": "DE"}),
        Knobs(frozenset(), user={"region": "no"}),
        Knobs(frozenset(), user={"region": "FR"}),
        Knobs(frozenset(), user={"region": "US"}),
        Knobs(frozenset({R.AUTHOR_UNKNOWN})),
    ]
    rows = evaluate(backend, *knob_world(cases), scope, KNOB_AS_OF)
    in_region = {pid: not row["fail_out_of_scope_region"] for pid, row in rows.items()}
    assert in_region == {"p0": True, "p1": True, "p2": False, "p3": False, "p4": False}
    # DE and NO users get the EEA default (deny) for third-party training unless they opt in.
    assert rows["p0"]["consent_rule"] == "region_default"
    assert rows["p0"]["first_reason"] == "consent_denied"
