"""The planner: counts per category and rule, holds, gaps, the 2024-11-15 change — and it
writes nothing to any store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.engine import Lake
from consentry.errors import BadInput
from consentry.keys import Keyring
from consentry.retention import (
    CategoryPlan,
    RetentionPlan,
    add_hold,
    compute_plan,
    load_plan,
    plan_sha256,
)
from consentry.settings import Settings
from consentry.store import open_store
from tests.delivery.conftest import LakeHome
from tests.retention.conftest import AT, initialised_home, store_digest, write_policy


def _entry(plan: RetentionPlan, category: str) -> CategoryPlan:
    return plan.category(category)


def test_the_world_under_the_2024_version(shared_world: LakeHome) -> None:
    plan = compute_plan(shared_world.settings, at=AT)
    assert plan.policy.version == "2024-11-15"
    posts = _entry(plan, "posts")
    # p05, p06, p18 were deleted; p08's author u-del deleted her account; p07's author is
    # missing from users (the account condition cannot apply to it).
    assert (posts.total, posts.delete, posts.keep) == (20, 4, 16)
    assert posts.by_trigger == {"after_post_deleted": 3, "while_account_active": 1}
    assert posts.unknown_owner == 0  # not checked unless asked: a join with every account
    checked = _entry(compute_plan(shared_world.settings, at=AT, owners=True), "posts")
    assert (checked.unknown_owner, checked.delete) == (1, 4)
    assert "1 post of accounts missing from users" in checked.explanation[-2]
    assert list(posts.explanation[:3]) == [
        "rule: kept while the account is active or until the post is deleted",
        "3 posts to be deleted: the post was deleted",
        "1 post to be deleted: the account was deleted",
    ]
    profile = _entry(plan, "profile")
    assert (profile.total, profile.delete) == (11, 1)
    consent = _entry(plan, "consent_evidence")
    assert (consent.total, consent.delete) == (4, 0)
    deliveries = _entry(plan, "deliveries")
    assert (deliveries.total, deliveries.delete, deliveries.delivery_ids) == (1, 0, ())
    assert plan.gaps == ()
    assert plan.totals["delete"] == 5
    # Deterministic: the same inputs give the same hash, and the hash covers the content.
    again = compute_plan(shared_world.settings, at=AT)
    assert again.plan_sha256 == plan.plan_sha256 == plan_sha256(plan.as_dict())
    assert plan.meta["engine"] == "duckdb"


def test_the_policy_change_of_2024_11_15_in_action(shared_world: LakeHome) -> None:
    """The same data an instant before and at 2024-11-15T00:00Z: under 2023-09-29 every
    profile is past X's 18-month limit and nothing else has a rule; under 2024-11-15
    profiles are kept while the account is active and posts gain a rule."""
    before = compute_plan(shared_world.settings, at=datetime(2024, 11, 14, 23, 59, 59, tzinfo=UTC))
    after = compute_plan(shared_world.settings, at=datetime(2024, 11, 15, tzinfo=UTC))
    assert (before.policy.version, after.policy.version) == ("2023-09-29", "2024-11-15")
    old, new = _entry(before, "profile"), _entry(after, "profile")
    # Every account was created 2020-01-01: more than 18 months before either instant.
    assert (old.delete, old.by_trigger) == (11, {"max_age": 11})
    assert list(old.explanation[:2]) == [
        "rule: kept at most 18 months",
        "11 profiles to be deleted: older than 18 months",
    ]
    # No account was deleted by 2024-11-15 (u-del left on 2025-01-01): all kept.
    assert (new.delete, new.keep) == (0, 11)
    assert new.explanation[0] == "rule: kept while the account is active"
    # Posts: a gap before, a rule after.
    assert [g.subject for g in before.gaps] == [
        "posts",
        "consent_evidence",
        "access_events",
        "deliveries",
        "audit",
    ]
    assert _entry(before, "posts").explanation == (
        "gap: no retention rule; 20 posts kept with no stated limit",
    )
    assert after.gaps == ()
    assert before.plan_sha256 != after.plan_sha256


def test_holds_keep_what_they_cover(world: LakeHome) -> None:
    settings = world.settings
    with open_store(settings.resolved_database_url) as store:
        keyring = Keyring.for_settings(settings)
        user = add_hold(
            store, keyring, matter="Doe v X", reason="claim", scope="user", target="u-del"
        )
        add_hold(
            store, keyring, matter="Audit", reason="regulator", scope="category", target="profile"
        )
    plan = compute_plan(settings, at=AT)
    posts, profile = _entry(plan, "posts"), _entry(plan, "profile")
    assert (posts.delete, posts.held, posts.held_by) == (3, 1, {user.id: 1})
    assert profile.delete == 0
    assert profile.held == 1
    assert len(plan.holds) == 2
    assert plan.inputs["store"]["active_holds"] == sorted(h.id for h in plan.holds)


def test_gaps_name_categories_without_rules_and_uncovered_tables(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.yaml", "posts: {max_age: 1 year}\n")
    settings = initialised_home(tmp_path / "home", policy)
    Lake.of(settings).write_arrow(
        "entities",
        pa.table(
            {"credential": ["k1"], "entity": ["acme"], "valid_from": [None], "valid_to": [None]}
        ),
    )
    plan = compute_plan(settings, at=AT)
    assert [(g.kind, g.subject) for g in plan.gaps] == [
        ("category", "profile"),
        ("category", "consent_evidence"),
        ("category", "access_events"),
        ("category", "deliveries"),
        ("category", "audit"),
        ("table", "lake.entities"),
    ]
    assert plan.gaps[-1].records == 1


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    at=st.datetimes(
        min_value=datetime(2023, 10, 1), max_value=datetime(2032, 1, 1), timezones=st.just(UTC)
    ),
    hold=st.sampled_from([None, "user", "category"]),
)
def test_plan_leaves_every_store_byte_identical(
    world: LakeHome, at: datetime, hold: str | None
) -> None:
    settings: Settings = world.settings
    if hold is not None:
        with open_store(settings.resolved_database_url) as store:
            add_hold(
                store,
                Keyring.for_settings(settings),
                matter="m",
                reason="r",
                scope=hold,
                target="u-del" if hold == "user" else "posts",
                until=datetime.now(UTC) + timedelta(days=1),
            )
    before = store_digest(settings)
    assert any(k.startswith("deliveries/") for k in before)
    assert "consentry.db" in before
    compute_plan(settings, at=at)
    assert store_digest(settings) == before


def test_a_plan_file_reads_back_as_the_same_plan(shared_world: LakeHome, tmp_path: Path) -> None:
    plan = compute_plan(shared_world.settings, at=AT)
    document = plan.as_dict()
    assert plan_sha256(document) == plan.plan_sha256
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert load_plan(path) == plan


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(format="other@1"), "format"),
        (lambda d: d["categories"][0].update(delete=-1), "plan_sha256"),
    ],
)
def test_a_plan_file_that_is_not_a_plan_names_the_field(
    shared_world: LakeHome, tmp_path: Path, edit: Any, field: str
) -> None:
    document = compute_plan(shared_world.settings, at=AT).as_dict()
    edit(document)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        load_plan(path)
    assert [(p.location, p.field) for p in caught.value.problems] == [(str(path), field)]


def test_a_hashed_plan_of_the_wrong_shape_is_refused_by_field(
    shared_world: LakeHome, tmp_path: Path
) -> None:
    """A file whose hash matches its content but whose content is not a plan's shape."""
    document = compute_plan(shared_world.settings, at=AT).as_dict()
    document["categories"][0]["delete"] = "many"
    document["plan_sha256"] = plan_sha256(document)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(BadInput) as caught:
        load_plan(path)
    assert [(p.location, p.field) for p in caught.value.problems] == [
        (str(path), "categories.0.delete")
    ]
