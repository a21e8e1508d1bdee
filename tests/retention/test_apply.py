"""The executor: exactly the plan, nothing outside its rules, never what a hold covers, and
nothing the second time; stale or edited plans are refused."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.audit import SqlAuditSink
from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.ledger.sync import sync_ledger
from consentry.policy import load_policy
from consentry.retention import (
    ANON_PREFIX,
    CategoryPlan,
    RetentionPlan,
    add_hold,
    apply_plan,
    compute_plan,
    cutoffs_for,
    load_plan,
    purge_history,
    trigger_of,
)
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import AuditEventRow, ConsentEventRow, ConsentStateRow, Subject
from tests.delivery.conftest import LakeHome, run_cli
from tests.lineage_events import check_run, dataset, read_events, runs
from tests.retention.conftest import AT, initialised_home, write_policy

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _entry(plan: RetentionPlan, category: str) -> CategoryPlan:
    return plan.category(category)


def _revoked(log: list[tuple[list[str], str]]) -> Any:
    def revoke(
        settings: Settings, *, post_ids: pa.Array, purged_at: datetime, purge_id: str
    ) -> int:
        log.append((post_ids.to_pylist(), purge_id))
        return len(post_ids)

    return revoke


def _events(settings: Settings, event_type: str) -> list[dict[str, Any]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return [e.payload for e in SqlAuditSink.read(session, event_type=event_type)]


def test_apply_executes_the_plan_and_verifies_it(world: LakeHome, tmp_path: Path) -> None:
    settings = world.settings
    plan = compute_plan(settings, at=AT)
    calls: list[tuple[list[str], str]] = []
    steps: list[str] = []
    purge = apply_plan(settings, plan, revoker=_revoked(calls), on_progress=steps.append)
    assert purge["state"] == "verified"
    # The steps `retention apply` shows on its progress bar, in the order they ran.
    assert steps[:3] == [
        "re-deriving the plan's candidates",
        "saving the decisions",
        "revoking delivered posts",
    ]
    assert "rewriting posts" in steps
    assert steps.index("rewriting posts") < steps.index("publishing posts")
    assert steps[-2:] == ["purging the control plane", "verifying every store"]
    assert purge["results"]["deleted"]["lake.posts"] == 4
    assert purge["results"]["deleted"]["lake.users"] == 1
    assert purge["results"]["deleted"]["store.subjects"] == 1
    posts = Lake.of(settings).read_arrow("posts").column("post_id").to_pylist()
    assert sorted({f"p{i:02d}" for i in range(1, 21)} - set(posts)) == [
        "p05",
        "p06",
        "p08",
        "p18",
    ]
    # Of those only p06 (deleted after the delivery's cut-off) went to `open`: revoked.
    assert calls == [(["p06"], purge["purge_id"])]
    assert purge["results"]["revocations"] == 1
    assert purge["evidence"]["ok"]
    assert not any(purge["evidence"]["remaining"].values())
    (run,) = runs(read_events(settings.home), "retention.apply")
    done = check_run(run)
    after = dataset(done["outputs"], "/lake/posts")["outputFacets"]["outputStatistics"]
    assert after["rowCount"] == len(posts) == 16
    assert (
        dataset(done["outputs"], "retention_purges")["outputFacets"]["outputStatistics"]["rowCount"]
        == 1
    )
    # planned -> applied -> verified, each in the audit log with the plan's hash.
    for event_type in ("retention.planned", "retention.applied", "retention.verified"):
        (event,) = _events(settings, event_type)
        assert event["plan_sha256"] == plan.plan_sha256
        assert event["purge_id"] == purge["purge_id"]
    (history,) = purge_history(open_store(settings.resolved_database_url))
    assert history["state"] == "verified"
    assert history["verified_at"] is not None
    # The second time: nothing is due, and applying that plan deletes nothing.
    second = compute_plan(settings, at=AT)
    assert second.totals["delete"] == second.totals["anonymise"] == 0
    again = apply_plan(settings, second, revoker=_revoked(calls))
    assert not any(again["results"]["deleted"].values())
    assert again["state"] == "verified"


def test_stale_edited_and_future_plans_are_refused(world: LakeHome, tmp_path: Path) -> None:
    home = world.settings.home
    plan_file = tmp_path / "plan.json"
    result = run_cli(home, "retention", "plan", "--at", "2026-01-01", "--out", str(plan_file))
    assert result.exit_code == 0, result.output
    # Edited: the content no longer matches its hash (bad input, exit 2).
    edited = json.loads(plan_file.read_text())
    edited["categories"][0]["delete"] = 0
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    result = run_cli(home, "retention", "apply", str(tmp_path / "edited.json"))
    assert result.exit_code == 2
    assert "does not match its hash" in result.stderr
    # Stale: a hold placed after planning changes the inputs (exit 1); nothing is deleted.
    result = run_cli(home, "hold", "add", "--matter", "M", "--reason", "R", "--user", "u-us")
    assert result.exit_code == 0, result.output
    before = Lake(world.settings.lake_dir).row_count("posts")
    result = run_cli(home, "retention", "apply", str(plan_file))
    assert result.exit_code == 1
    assert "the plan is stale" in result.stderr
    assert "store.active_holds" in result.stderr
    assert Lake(world.settings.lake_dir).row_count("posts") == before
    # Future: nothing is due at an instant that has not come.
    future = compute_plan(world.settings, at=datetime.now(UTC) + timedelta(days=1))
    (tmp_path / "future.json").write_text(json.dumps(future.as_dict()))
    result = run_cli(home, "retention", "apply", str(tmp_path / "future.json"))
    assert result.exit_code == 2
    assert "in the future" in result.stderr
    # Not a plan at all.
    (tmp_path / "x.json").write_text("[1, 2]")
    assert run_cli(home, "retention", "apply", str(tmp_path / "x.json")).exit_code == 2
    assert load_plan(plan_file).plan_sha256


def _build(
    settings: Settings,
    users: list[tuple[str, datetime | None]],
    posts: list[tuple[str, str, datetime, datetime | None]],
) -> None:
    lake = Lake.of(settings)
    utc = pa.timestamp("us", tz="UTC")
    lake.write_arrow(
        "users",
        pa.table(
            {
                "user_id": [u for u, _ in users],
                "created_at": pa.array([T0] * len(users), utc),
                "region": ["US"] * len(users),
                "birth_date": pa.array([None] * len(users), pa.date32()),
                "protected": [False] * len(users),
                "deactivated_at": pa.array([None] * len(users), utc),
                "deleted_at": pa.array([d for _, d in users], utc),
            },
            schema=arrow_schema("users"),
        ),
    )
    lake.write_arrow(
        "posts",
        pa.table(
            {
                "post_id": [p[0] for p in posts],
                "author_id": [p[1] for p in posts],
                "created_at": pa.array([p[2] for p in posts], utc),
                "text": [f"text of {p[0]}" for p in posts],
                "visibility": ["public"] * len(posts),
                "lang": ["en"] * len(posts),
                "deleted_at": pa.array([p[3] for p in posts], utc),
            },
            schema=arrow_schema("posts"),
        ),
    )
    sync_ledger(settings)


day = st.integers(0, 3 * 365)
maybe_day = st.none() | day
USERS = ["a", "b", "c", "d"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_age=st.none() | st.sampled_from(["30 days", "6 months", "1 year", "18 months"]),
    account=st.sampled_from([None, "while_account_active: true", "after_account_deleted: 45 days"]),
    post_grace=st.none() | st.sampled_from(["0 days", "7 days"]),
    accounts=st.lists(maybe_day, min_size=4, max_size=4),
    rows=st.lists(
        st.tuples(st.sampled_from([*USERS, "ghost"]), day, maybe_day), min_size=1, max_size=25
    ),
    held=st.sets(st.sampled_from(USERS), max_size=2),
    at_day=st.integers(200, 1000),  # up to 2026-09-27: plans for the past only
)
def test_apply_deletes_exactly_the_due_unheld_rows_once(
    max_age: str | None,
    account: str | None,
    post_grace: str | None,
    accounts: list[int | None],
    rows: list[tuple[str, int, int | None]],
    held: set[str],
    at_day: int,
) -> None:
    """Property: after apply, a post is gone exactly when the rule makes it due at `at` and
    no hold covers its author; every other row is untouched, byte for byte; a held post is
    never deleted; and planning again finds nothing, so a second apply deletes nothing."""
    lines = [
        x
        for x in (
            f"max_age: {max_age}" if max_age else None,
            account,
            f"after_post_deleted: {post_grace}" if post_grace else None,
        )
        if x
    ]
    if not lines:
        lines = ["max_age: 1 year"]
    rule_yaml = "posts:\n" + "".join(f"  {line}\n" for line in lines)
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp) / "p.yaml", rule_yaml)
        settings = initialised_home(Path(tmp) / "home", policy)
        users = [
            (u, None if d is None else T0 + timedelta(days=d))
            for u, d in zip(USERS, accounts, strict=True)
        ]
        posts = [
            (
                f"p{i}",
                author,
                T0 + timedelta(days=c),
                None if d is None else T0 + timedelta(days=c + d),
            )
            for i, (author, c, d) in enumerate(rows)
        ]
        _build(settings, users, posts)
        with open_store(settings.resolved_database_url) as store:
            for user in sorted(held):
                add_hold(
                    store,
                    Keyring.for_settings(settings),
                    matter="m",
                    reason="r",
                    scope="user",
                    target=user,
                )
        at = T0 + timedelta(days=at_day)
        before = Lake.of(settings).read_arrow("posts").to_pylist()
        plan = compute_plan(settings, at=at)
        purge = apply_plan(settings, plan, revoker=_revoked([]))
        after = {r["post_id"]: r for r in Lake.of(settings).read_arrow("posts").to_pylist()}
        rule = load_policy(policy).versions[0].retention["posts"]
        cuts = cutoffs_for(rule, at)
        deleted_at = dict(users)
        for row in before:
            due = trigger_of(
                cuts,
                row["created_at"],
                account_deleted_at=deleted_at.get(row["author_id"]),
                post_deleted_at=row["deleted_at"],
            )
            if due is not None and row["author_id"] not in held:
                assert row["post_id"] not in after, (row, due)
            else:
                assert after[row["post_id"]] == row  # untouched, every column
        assert purge["state"] == "verified"
        assert _entry(plan, "posts").delete == len(before) - len(after)
        second = compute_plan(settings, at=at)
        assert _entry(second, "posts").delete == 0
        assert _entry(second, "posts").held == _entry(plan, "posts").held
        again = apply_plan(settings, second, revoker=_revoked([]))
        assert not any(again["results"]["deleted"].values())
        assert Lake.of(settings).row_count("posts") == len(after)


def test_access_events_are_anonymised_once_and_entity_holds_win(tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p.yaml",
        "access_events: {max_age: 30 days, action: anonymise, fields: [credential, endpoint]}\n",
    )
    settings = initialised_home(tmp_path / "home", policy)
    lake = Lake.of(settings)
    utc = pa.timestamp("us", tz="UTC")
    lake.write_arrow(
        "access_events",
        pa.table(
            {
                "request_id": ["r1", "r2", "r3", "r4", "r5"],
                "ts": pa.array([T0, T0, T0, T0, AT], utc),
                "credential": ["key-1", "key-1", "10.0.0.9", "key-acme", "key-1"],
                "posts": [10, 20, 30, 40, 50],
                "endpoint": ["/a", None, "/b", "/c", "/d"],
            }
        ),
    )
    lake.write_arrow(
        "entities",
        pa.table(
            {
                "credential": ["key-acme"],
                "entity": ["acme"],
                "valid_from": pa.array([T0 - timedelta(days=1)], utc),
                "valid_to": pa.array([None], utc),
            }
        ),
    )
    with open_store(settings.resolved_database_url) as store:
        hold = add_hold(
            store,
            Keyring.for_settings(settings),
            matter="m",
            reason="r",
            scope="entity",
            target="acme",
        )
    plan = compute_plan(settings, at=AT)
    access = _entry(plan, "access_events")
    assert (access.anonymise, access.held, access.keep) == (3, 1, 1)
    assert access.held_by == {hold.id: 1}
    purge = apply_plan(settings, plan)
    assert purge["state"] == "verified"
    rows = {r["request_id"]: r for r in lake.read_arrow("access_events").to_pylist()}
    assert rows["r1"]["credential"].startswith(ANON_PREFIX)
    assert rows["r1"]["credential"] == rows["r2"]["credential"]  # equal stays equal
    assert rows["r3"]["credential"] != rows["r1"]["credential"]
    assert rows["r1"]["endpoint"] is None
    assert rows["r3"]["endpoint"] is None
    assert rows["r4"]["credential"] == "key-acme"
    assert rows["r4"]["endpoint"] == "/c"
    assert rows["r5"]["credential"] == "key-1"  # not due
    assert sum(r["posts"] for r in rows.values()) == 150  # counts survive anonymisation
    second = compute_plan(settings, at=AT)
    assert (
        _entry(second, "access_events").anonymise,
        _entry(second, "access_events").done,
    ) == (0, 3)
    apply_plan(settings, second)
    assert {r["request_id"]: r for r in lake.read_arrow("access_events").to_pylist()} == rows


def test_consent_evidence_leaves_lake_ledger_and_state(world: LakeHome, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p.yaml",
        "consent_evidence: {max_age: 30 days}\n"
        "profile: {while_account_active: true, action: anonymise, fields: [birth_date]}\n",
    )
    settings = Settings(home=world.settings.home, policy_file=policy)
    plan = compute_plan(settings, at=AT)
    assert _entry(plan, "consent_evidence").delete == 4
    assert _entry(plan, "profile").anonymise == 1
    purge = apply_plan(settings, plan)
    assert purge["state"] == "verified"
    assert purge["results"]["deleted"]["store.consent_events"] == 4
    assert purge["results"]["deleted"]["store.consent_state"] == 3
    assert Lake.of(settings).row_count("consent_events") == 0
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ConsentEventRow)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(ConsentStateRow)) == 0
        subject = session.get(Subject, "u-del")
        assert subject is not None
        assert subject.birth_date is None
    users = {r["user_id"]: r for r in Lake.of(settings).read_arrow("users").to_pylist()}
    assert users["u-del"]["birth_date"] is None
    assert users["u-us"]["birth_date"] is not None


def test_expired_deliveries_are_purged_and_sealed_audit_events_kept(
    world: LakeHome, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", "deliveries: {max_age: 1 second}\naudit: {max_age: 1 second}\n"
    )
    settings = Settings(home=world.settings.home, policy_file=policy)
    (delivery,) = world.visible()
    time.sleep(1.1)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        audited = session.scalar(sa.select(sa.func.count()).select_from(AuditEventRow))
    plan = compute_plan(settings)
    assert _entry(plan, "deliveries").delivery_ids == (delivery,)
    assert _entry(plan, "deliveries").lineage_rows == len(world.lineage(delivery)) > 0
    # Every audit event is a leaf of the tamper-evident log: due, but kept and said so.
    audit = _entry(plan, "audit")
    assert (audit.delete, audit.held_by) == (0, {"merkle-log": audited})
    assert "sealed in the tamper-evident audit log" in audit.explanation[1]
    purge = apply_plan(settings, plan)
    assert purge["state"] == "verified"
    assert purge["results"]["delivery_dirs_removed"] == 1
    assert world.visible() == []
    assert world.lineage() == []
    assert purge["results"]["deleted"]["store.audit_events"] == 0
    types = [
        e
        for e in ("retention.planned", "retention.applied", "retention.verified")
        if _events(settings, e)
    ]
    assert types == ["retention.planned", "retention.applied", "retention.verified"]
