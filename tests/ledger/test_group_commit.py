"""Group commit on SQLite and PostgreSQL: concurrent changes from two committers (two
server workers) are all stored, each anchored by its own audit event, numbered in commit
order, the doctor finds nothing; a failing change fails alone; unknown users get None."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from consentry.audit.log import lock_log
from consentry.doctor import run_doctor
from consentry.keys import Keyring
from consentry.ledger.group import GroupCommitter
from consentry.ledger.service import ConsentChange, ConsentEventRecord, ConsentLedger, Evidence
from consentry.policy import Choice, load_policy
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import AuditEventRow, ConsentEventRow
from tests.delivery.conftest import LakeHome, make_lake_home, world_users
from tests.services import postgres_schema

THIRD = "ai_training_third_party"
EVIDENCE = Evidence(origin="test", client="api")


@pytest.fixture(params=["sqlite", "postgresql"])
def home(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[LakeHome]:
    root = tmp_path / "home"
    if request.param == "sqlite":
        yield make_lake_home(Settings(home=root))
        return
    with postgres_schema() as url:
        yield make_lake_home(Settings(home=root, database_url=url))


def _ledger(home: LakeHome) -> ConsentLedger:
    settings = home.settings
    return ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_home(settings.home),
    )


def _change(user: str, i: int, **extra: Any) -> ConsentChange:
    choice = Choice.ALLOW if i % 2 else Choice.DENY
    return ConsentChange(user, THIRD, choice, "api", EVIDENCE, request_id=f"req-{i}", **extra)


def test_concurrent_changes_of_two_committers_are_all_stored_and_anchored(
    home: LakeHome,
) -> None:
    users = world_users().column("user_id").to_pylist()
    committers = [GroupCommitter(_ledger(home)), GroupCommitter(_ledger(home))]

    def submit(k: int) -> Future[ConsentEventRecord | None]:
        return committers[k % 2].submit(_change(users[k % len(users)], k))

    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = list(pool.map(submit, range(400)))
    records = [f.result(timeout=120) for f in futures]
    assert all(r is not None for r in records)
    ids = {r.event_id for r in records if r is not None}
    assert len(ids) == 400

    store = committers[0].ledger.store
    with store.session() as session:
        rows = [
            (int(seq), int(anchor or 0))
            for seq, anchor in session.execute(
                sa.select(ConsentEventRow.seq, ConsentEventRow.anchor_seq).where(
                    ConsentEventRow.event_id.in_(ids)
                )
            ).all()
        ]
        anchors = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                AuditEventRow.seq.in_([a for _, a in rows])
            )
        ).all()
    # One consent.changed per event, each naming its event; event numbers in log order.
    assert len({a for _, a in rows}) == 400
    by_anchor = dict(anchors)
    for seq, anchor in rows:
        assert f'"ledger_seq":{seq},' in by_anchor[anchor]
    ordered = sorted(rows)
    assert [a for _, a in ordered] == sorted(a for _, a in ordered)
    report = run_doctor(home.settings)
    assert report.ok, report.first_violation


def test_a_failing_change_fails_alone_and_unknown_users_get_none(home: LakeHome) -> None:
    users = world_users().column("user_id").to_pylist()
    ledger = _ledger(home)
    committer = GroupCommitter(ledger)
    holder = open_store(home.settings.resolved_database_url)
    # Hold the log's lock so the next changes queue up and form one batch.
    with holder.session(immediate=True) as session:
        lock_log(session)
        first = committer.submit(_change(users[0], 0))
        batch = [committer.submit(_change(users[1], k, event_id="dup")) for k in (1, 2)]
        batch += [committer.submit(_change(users[k % len(users)], k)) for k in range(3, 9)]
        batch.append(committer.submit(_change("nobody-knows-me", 9)))
        threading.Event().wait(0.3)
        assert not first.done()
    holder.close()
    assert first.result(timeout=60) is not None
    outcomes: list[Any] = []
    for future in batch:
        try:
            outcomes.append(future.result(timeout=60))
        except IntegrityError:
            outcomes.append("refused")
    assert outcomes.count("refused") == 1  # the second "dup"
    assert outcomes[-1] is None  # a user the platform does not know: nothing recorded
    assert sum(isinstance(o, ConsentEventRecord) for o in outcomes) == 7
    assert ledger.history("nobody-knows-me") == []
    assert run_doctor(home.settings).ok


def test_known_users_are_told_apart_whatever_their_ids(home: LakeHome) -> None:
    # The batch's lookup of known users takes any ids (one statement over an array): quotes,
    # commas, brackets, backslashes and non-ASCII in ids the platform does not know are
    # none of them, and a known user among them is found.
    ledger = _ledger(home)
    known = world_users().column("user_id").to_pylist()[0]
    odd = ['a"b', "a,b", "[x]", "a\\b", "ünï😀", "' OR 1=1 --", known + " "]
    recorded = ledger.record_many(
        [_change(u, i) for i, u in enumerate([*odd, known])], known_users_only=True
    )
    assert [r is not None for r in recorded] == [False] * len(odd) + [True]


@pytest.fixture
def pg_home(tmp_path: Any) -> Iterator[LakeHome]:
    with postgres_schema() as url:
        yield make_lake_home(Settings(home=tmp_path / "home", database_url=url))


def _round_trips(trace: str) -> int:
    """Times the client waits on the server in a libpq trace: each Sync (extended
    protocol), simple Query and CopyDone the client sends is followed by a wait."""
    sent = [line.split("\t") for line in trace.splitlines() if line.startswith("F\t")]
    return sum(1 for parts in sent if parts[2].split(" ")[0] in ("Sync", "Query", "CopyDone"))


def test_a_group_commit_on_postgresql_takes_three_round_trips(
    pg_home: LakeHome, tmp_path: Any
) -> None:
    # BEGIN; the log's lock, the known users and the numbers in one statement; every write
    # and the COMMIT in one pipeline. (Statement by statement it was fourteen.)
    import psycopg

    ledger = _ledger(pg_home)
    users = world_users().column("user_id").to_pylist()
    ledger.record_many([_change(users[0], 0)], known_users_only=True)  # pool warmed up
    path = tmp_path / "libpq.trace"
    with path.open("w") as out:

        def trace(dbapi_connection: Any, *_: Any) -> None:
            dbapi_connection.pgconn.trace(out.fileno())
            dbapi_connection.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)

        engine = ledger.store._engine
        sa.event.listen(engine, "checkout", trace)
        try:
            changes = [_change(u, i) for i, u in enumerate(users[:6])]
            changes.append(_change("nobody-knows-me", 6))
            recorded = ledger.record_many(changes, known_users_only=True)
        finally:
            sa.event.remove(engine, "checkout", trace)
    assert [r is not None for r in recorded] == [True] * 6 + [False]
    assert _round_trips(path.read_text()) == 3
    assert [h.event_id for h in ledger.history(users[0])][-1] == recorded[0].event_id  # type: ignore[union-attr]
    assert run_doctor(pg_home.settings).ok
