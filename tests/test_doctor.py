"""The doctor holds a clean home to every invariant and names each kind of tampering: edited
or inserted consent events and state (on SQLite and PostgreSQL), a lake the ledger never saw,
a delivery without its record, orphan lineage, a purged key brought back, a revocation taken
away, interrupted jobs and staged snapshots nobody owns."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import sqlalchemy as sa

from consentry.delivery.build import LINEAGE_TABLE
from consentry.doctor import INVARIANTS, run_doctor
from consentry.retention import apply_plan, compute_plan
from consentry.revocation import revoke_purged, run_revocations
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import DeliveryRow, JobRow, RevocationRow
from tests.delivery.conftest import LakeHome, make_lake_home
from tests.services import postgres_schema

AT = datetime(2026, 1, 1, tzinfo=UTC)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "invariants.md"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def clean(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LakeHome]:
    """The world with a delivery, a revocation run and a verified purge (one per backend)."""
    root = tmp_path_factory.mktemp(f"doctor-{request.param}") / "home"
    if request.param == "sqlite":
        yield _purged_world(Settings(home=root))
        return
    with postgres_schema() as url:
        yield _purged_world(Settings(home=root, database_url=url))


def _purged_world(settings: Settings) -> LakeHome:
    home = make_lake_home(settings)
    home.deliver("open")
    purge = apply_plan(settings, compute_plan(settings, at=AT), revoker=revoke_purged)
    assert purge["state"] == "verified"
    assert purge["results"]["revocations"] == 1
    run_revocations(settings, "open")
    return home


def _sql(home: LakeHome, statement: str, **params: Any) -> None:
    with open_store(home.settings.resolved_database_url) as store, store.engine.begin() as conn:
        conn.execute(sa.text(statement), params)


def _violations(home: LakeHome) -> dict[str, list[str]]:
    report = run_doctor(home.settings)
    return {c.invariant: c.violations for c in report.checks if not c.ok}


@contextmanager
def _tampered(
    home: LakeHome, change: Callable[[], object], undo: Callable[[], object]
) -> Iterator[None]:
    change()
    try:
        yield
    finally:
        undo()


def test_a_clean_home_holds_every_invariant(clean: LakeHome) -> None:
    report = run_doctor(clean.settings)
    assert report.ok, report.first_violation
    assert [c.invariant for c in report.checks] == list(INVARIANTS)
    assert all(c.checked > 0 for c in report.checks), report.to_json()
    text = DOCS.read_text(encoding="utf-8")
    assert all(f"| {i} |" in text for i in INVARIANTS)


def _flip(home: LakeHome, table: str, key: str) -> Callable[[], None]:
    return lambda: _sql(
        home,
        f"UPDATE {table} SET choice = CASE choice WHEN 'deny' THEN 'allow' ELSE 'deny' END "
        f"WHERE {key}",
    )


def test_an_edited_consent_event_is_found(clean: LakeHome) -> None:
    flip = _flip(clean, "consent_events", "event_id = 'e3'")
    with _tampered(clean, flip, flip):
        found = _violations(clean)
    assert "I5" in found
    assert any("fold" in v for v in found["I5"]) or any("add up" in v for v in found["I5"])
    assert _violations(clean) == {}


def test_an_edited_state_row_is_found(clean: LakeHome) -> None:
    flip = _flip(clean, "consent_state", "user_id = 'u-fr-out'")
    with _tampered(clean, flip, flip):
        found = _violations(clean)
    assert list(found) == ["I5"]
    assert "fold of consent_events" in found["I5"][0]


def test_an_event_and_its_state_edited_together_still_break_the_anchor(clean: LakeHome) -> None:
    """The opt-out turned into allow in both tables: the fold agrees, the log does not."""
    event = _flip(clean, "consent_events", "event_id = 'e3'")
    state = _flip(clean, "consent_state", "user_id = 'u-fr-out'")

    def both() -> None:
        event()
        state()

    with _tampered(clean, both, both):
        found = _violations(clean)
    assert "I5" in found
    assert any("add up" in v for v in found["I5"]), found


def test_an_event_inserted_directly_has_no_anchor(clean: LakeHome) -> None:
    insert = (
        "INSERT INTO consent_events (event_id, user_id, purpose, choice, at, source, "
        "recorded_at) VALUES ('forged', 'u-us', 'ai_training_third_party', 'allow', "
        ":at, 'api', :at)"
    )
    with _tampered(
        clean,
        lambda: _sql(clean, insert, at=datetime(2025, 1, 1, tzinfo=UTC)),
        lambda: _sql(clean, "DELETE FROM consent_events WHERE event_id = 'forged'"),
    ):
        found = _violations(clean)
    assert any("no anchor" in v for v in found["I5"])


def test_an_opt_out_recorded_before_a_delivery_that_carried_the_user_is_found(
    clean: LakeHome,
) -> None:
    """I1: the ledger says u-us opted out before the delivery was built, yet it shipped."""
    insert = (
        "INSERT INTO consent_events (event_id, user_id, purpose, choice, at, source, "
        "recorded_at, anchor_seq) VALUES ('early', 'u-us', 'ai_training_third_party', 'deny', "
        ":at, 'settings', :at, 1)"
    )
    with _tampered(
        clean,
        lambda: _sql(clean, insert, at=datetime(2025, 1, 1, tzinfo=UTC)),
        lambda: _sql(clean, "DELETE FROM consent_events WHERE event_id = 'early'"),
    ):
        found = _violations(clean)
    assert "opted out" in found["I1"][0]


def test_a_lake_the_ledger_never_saw_is_found(clean: LakeHome) -> None:
    """The bug this guards against: an opt-out in the lake that never reached the ledger."""
    original = clean.lake.read_arrow("consent_events")
    extra = pa.table(
        {
            "event_id": ["lake-only"],
            "user_id": ["u-us"],
            "purpose": ["ai_training_third_party"],
            "choice": ["deny"],
            "at": pa.array([datetime(2025, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
            "source": ["settings"],
        },
        schema=original.schema,
    )
    with _tampered(
        clean,
        lambda: clean.lake.write_arrow("consent_events", pa.concat_tables([original, extra])),
        lambda: clean.lake.write_arrow("consent_events", original),
    ):
        found = _violations(clean)
    assert "missing from the ledger" in found["I6"][0]


def test_a_delivery_without_its_record_is_found(clean: LakeHome) -> None:
    with open_store(clean.settings.resolved_database_url) as store, store.session() as s:
        row = s.scalars(sa.select(DeliveryRow).where(DeliveryRow.purged_at.is_(None))).first()
        assert row is not None
        values = {c.key: getattr(row, c.key) for c in DeliveryRow.__table__.columns}

    def restore() -> None:
        with open_store(clean.settings.resolved_database_url) as store, store.session() as s:
            s.add(DeliveryRow(**values))

    with _tampered(
        clean,
        lambda: _sql(clean, "DELETE FROM deliveries WHERE id = :id", id=values["id"]),
        restore,
    ):
        found = _violations(clean)
    assert "no recorded delivery" in found["I2"][0]
    assert "not a delivery" in found["I3"][0]


def test_a_purged_key_brought_back_and_an_untold_licensee_are_found(clean: LakeHome) -> None:
    users = clean.lake.read_arrow("users")
    ghost = pa.table(
        {
            "user_id": ["u-del"],
            "created_at": pa.array(
                [datetime(2020, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
            ),
            "region": ["US"],
            "birth_date": pa.array([None], pa.date32()),
            "protected": [False],
            "deactivated_at": pa.array([None], pa.timestamp("us", tz="UTC")),
            "deleted_at": pa.array([None], pa.timestamp("us", tz="UTC")),
        }
    ).cast(users.schema, safe=False)
    with _tampered(
        clean,
        lambda: clean.lake.write_arrow("users", pa.concat_tables([users, ghost])),
        lambda: clean.lake.write_arrow("users", users),
    ):
        found = _violations(clean)
    assert any("users" not in v and "profile key" in v for v in found["I4"]), found
    # Written over, the ghost is still in a version time travel reads: still a violation,
    # until a vacuum deletes that version's files.
    assert "profile key" in _violations(clean)["I4"][0]
    clean.lake.vacuum("users")
    assert "I4" not in _violations(clean)
    with open_store(clean.settings.resolved_database_url) as store, store.session() as s:
        revoked = s.scalars(
            sa.select(RevocationRow).where(RevocationRow.reason == "retention_purged")
        ).first()
        assert revoked is not None
        values = {c.key: getattr(revoked, c.key) for c in RevocationRow.__table__.columns}

    def restore() -> None:
        with open_store(clean.settings.resolved_database_url) as store, store.session() as s:
            s.add(RevocationRow(**values))

    with _tampered(
        clean,
        lambda: _sql(clean, "DELETE FROM revocations WHERE seq = :seq", seq=values["seq"]),
        restore,
    ):
        found = _violations(clean)
    assert any("never revoked" in v for v in found["I4"])


def test_interrupted_jobs_and_unowned_snapshots_are_found(clean: LakeHome) -> None:
    now = datetime.now(UTC)
    insert = (
        "INSERT INTO jobs (id, kind, subject, state, step, intent, owner, started_at, "
        "updated_at) VALUES ('job-dead', 'import', 'users', 'running', 'import.staged', '{}', "
        "'elsewhere:1', :now, :now)"
    )
    with _tampered(
        clean,
        lambda: _sql(clean, insert, now=now),
        lambda: _sql(clean, "DELETE FROM jobs WHERE id = 'job-dead'"),
    ):
        found = _violations(clean)
    assert "interrupted at import.staged" in found["I6"][-1]
    clean.lake.stage("posts", "00112233aabbccdd")
    try:
        found = _violations(clean)
    finally:
        clean.lake.discard("posts", "00112233aabbccdd")
    assert "no running job owns" in found["I6"][0]
    assert _violations(clean) == {}
    with open_store(clean.settings.resolved_database_url) as store, store.session() as s:
        assert (
            s.scalar(
                sa.select(sa.func.count()).select_from(JobRow).where(JobRow.state == "running")
            )
            == 0
        )


def test_lineage_of_a_delivery_that_does_not_exist_is_found(clean: LakeHome) -> None:
    lineage = clean.lake.read_arrow(LINEAGE_TABLE)
    orphan = lineage.slice(0, 1).set_column(
        0, "delivery_id", pa.array(["dlv-nowhere"], pa.string())
    )
    with _tampered(
        clean,
        lambda: clean.lake.write_arrow(LINEAGE_TABLE, pa.concat_tables([lineage, orphan])),
        lambda: clean.lake.write_arrow(LINEAGE_TABLE, lineage),
    ):
        found = _violations(clean)
    assert "dlv-nowhere, which is not a delivery" in found["I3"][0]
    assert pc.sum(pc.equal(lineage["delivery_id"], "dlv-nowhere")).as_py() in (None, 0)
