"""Legal holds: store operations, what they cover and when, and audit events without names."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.audit import SqlAuditSink
from consentry.errors import BadInput, ConsentryError
from consentry.keys import Keyring
from consentry.retention import (
    HoldRecord,
    add_hold,
    covering_hold,
    hold_set,
    list_holds,
    matter_sha256,
    release_hold,
)
from consentry.retention.candidates import hold_tables
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import LegalHold
from tests.retention.conftest import initialised_home

T = datetime(2026, 1, 1, tzinfo=UTC)


def test_add_release_list_and_audit(tmp_path: object, settings: Settings) -> None:
    home = initialised_home(settings.home.parent / "h")
    keyring = Keyring.for_settings(home)
    with open_store(home.resolved_database_url) as store:
        hold = add_hold(
            store, keyring, matter="Doe v X", reason="claim", scope="user", target="u-1"
        )
        cat = add_hold(
            store,
            keyring,
            matter="DPC 2026/17",
            reason="inquiry",
            scope="category",
            target="access_events",
            until=datetime.now(UTC) + timedelta(days=30),
        )
        assert [h.id for h in list_holds(store, active_at=datetime.now(UTC))] == [hold.id, cat.id]
        assert covering_hold(store, category="posts", user_id="u-1") == list_holds(store)[0]
        assert covering_hold(store, category="posts", user_id="u-2") is None
        assert covering_hold(store, category="access_events") is not None
        released = release_hold(store, hold.id)
        assert released.released_at is not None
        assert released.state_at(datetime.now(UTC)) == "released"
        with pytest.raises(ConsentryError, match="not active"):
            release_hold(store, hold.id)
        with pytest.raises(BadInput):
            release_hold(store, "hold-nope")
        assert covering_hold(store, category="posts", user_id="u-1") is None
        with store.session() as session:
            added = [e.payload for e in SqlAuditSink.read(session, event_type="hold.added")]
            gone = [e.payload for e in SqlAuditSink.read(session, event_type="hold.released")]
    # No names in the log: the user as a pseudonymous reference, the matter as a hash.
    assert added[0]["target_ref"] == keyring.pseudonym("u-1") != "u-1"
    assert added[0]["matter_sha256"] == matter_sha256("Doe v X")
    assert added[1]["target_ref"] == "access_events"
    assert added[1]["until"] is not None
    assert "Doe" not in str(added) + str(gone)
    assert gone == [
        {"hold_id": hold.id, "matter_sha256": matter_sha256("Doe v X"), "at": gone[0]["at"]}
    ]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"matter": " "}, "--matter"),
        ({"reason": ""}, "--reason"),
        ({"scope": "planet"}, "scope"),
        ({"scope": "category", "target": "dms"}, "--category"),
        ({"until": datetime(2020, 1, 1, tzinfo=UTC)}, "--until"),
        ({"target": "x" * 200}, "--user"),
        ({"matter": "m" * 201}, "--matter"),
        ({"target": "x" * 129}, "--user"),
        ({"until": T, "now": T}, "--until"),
    ],
)
def test_bad_holds_are_refused(settings: Settings, kwargs: dict[str, object], field: str) -> None:
    home = initialised_home(settings.home.parent / "h")
    args: dict[str, object] = {"matter": "M", "reason": "R", "scope": "user", "target": "u-1"}
    args.update(kwargs)
    with open_store(home.resolved_database_url) as store:
        with pytest.raises(BadInput) as info:
            add_hold(store, Keyring.for_settings(home), **args)  # type: ignore[arg-type]
        assert info.value.problems[0].field == field
        assert info.value.problems[0].location == "command line"
        assert list_holds(store) == []


def test_the_hold_tables_are_typed_even_when_empty() -> None:
    for holds in (hold_set([], T), hold_set([_hold(1, "user", "u-1", 0, None, None)], T)):
        users, entities = hold_tables(holds)
        assert users.schema == pa.schema([("user_id", pa.string()), ("hold_id", pa.string())])
        assert entities.schema == pa.schema([("entity", pa.string()), ("hold_id", pa.string())])


def test_a_matter_of_200_characters_is_accepted_and_the_hold_reads_back(
    settings: Settings,
) -> None:
    home = initialised_home(settings.home.parent / "h")
    until = datetime(2030, 1, 1, tzinfo=UTC)
    with open_store(home.resolved_database_url) as store:
        added = add_hold(
            store,
            Keyring.for_settings(home),
            matter="m" * 200,
            reason="R",
            scope="user",
            target="u" * 128,
            until=until,
        )
        assert re.fullmatch(r"hold-[0-9a-f]{12}", added.id)
        (listed,) = list_holds(store)
    assert listed == added
    assert (listed.matter, listed.until, listed.released_at) == ("m" * 200, until, None)


def _hold(
    i: int, scope: str, target: str, start: int, until: int | None, released: int | None
) -> HoldRecord:
    return HoldRecord(
        id=f"hold-{i:02d}",
        matter="m",
        reason="r",
        scope=scope,
        target=target,
        created_at=T + timedelta(days=start),
        until=None if until is None else T + timedelta(days=start + until + 1),
        released_at=None if released is None else T + timedelta(days=start + released),
    )


holds = st.lists(
    st.builds(
        _hold,
        st.integers(0, 99),
        st.sampled_from(["user", "entity", "category"]),
        st.sampled_from(["a", "b", "posts"]),
        st.integers(0, 20),
        st.none() | st.integers(0, 20),
        st.none() | st.integers(0, 20),
    ),
    max_size=8,
    unique_by=lambda h: h.id,
)


@settings(max_examples=200, deadline=None)
@given(holds=holds, day=st.integers(0, 45))
@example(  # exactly at until (day 3), at created_at and at released_at: each end fixed
    holds=[
        _hold(1, "user", "a", 1, 1, None),  # created day 1, until day 3
        _hold(2, "user", "a", 3, None, None),  # created day 3
        _hold(3, "category", "posts", 0, None, 3),  # released day 3
        _hold(4, "category", "posts", 1, 1, 5),  # until day 3, release later
    ],
    day=3,
)
def test_hold_set_names_the_smallest_active_hold(holds: list[HoldRecord], day: int) -> None:
    at = T + timedelta(days=day)
    indexed = hold_set(holds, at)
    active = [h for h in holds if h.active_at(at)]
    assert [h.id for h in indexed.active] == sorted(h.id for h in active)
    for scope, table in (
        ("user", indexed.users),
        ("entity", indexed.entities),
        ("category", indexed.categories),
    ):
        for target in ("a", "b", "posts"):
            covering = sorted(h.id for h in active if h.scope == scope and h.target == target)
            assert table.get(target) == (covering[0] if covering else None)
    for h in holds:
        expected = (
            h.created_at <= at
            and (h.until is None or at < h.until)
            and (h.released_at is None or at < h.released_at)
        )
        assert h.active_at(at) == expected


def test_a_hold_lapses_exactly_at_until() -> None:
    """A hold is active on `[created_at, until)` and `[created_at, released_at)`: at
    `until` it no longer protects anything (state `expired`); one microsecond before it
    does; at `created_at` it already does."""
    us = timedelta(microseconds=1)
    until = T + timedelta(days=10)
    hold = HoldRecord("hold-x", "m", "r", "user", "a", T, until, None)
    assert [hold.active_at(t) for t in (T - us, T, until - us, until, until + us)] == [
        False,
        True,
        True,
        False,
        False,
    ]
    assert hold.state_at(until) == "expired"
    assert hold_set([hold], until).users == {}
    assert hold_set([hold], until - us).users == {"a": "hold-x"}


def test_a_holds_state_changes_at_its_until_and_its_release_themselves() -> None:
    tick = timedelta(microseconds=1)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    until = start + timedelta(days=10)
    released = start + timedelta(days=5)
    timed = HoldRecord("h1", "m", "r", "user", "u", start, until, None)
    assert timed.state_at(start - tick) == "pending"
    assert timed.state_at(start) == "active"
    assert timed.state_at(until - tick) == "active"
    assert timed.state_at(until) == "expired"
    freed = HoldRecord("h2", "m", "r", "user", "u", start, None, released)
    assert freed.state_at(released - tick) == "active"
    assert freed.state_at(released) == "released"
    assert timed.as_dict(until) == {
        "id": "h1",
        "matter": "m",
        "reason": "r",
        "scope": "user",
        "target": "u",
        "created_at": "2025-01-01T00:00:00Z",
        "until": "2025-01-11T00:00:00Z",
        "released_at": None,
        "state": "expired",
    }
    assert freed.as_dict(released)["until"] is None
    assert freed.as_dict(released)["released_at"] == "2025-01-06T00:00:00Z"
    assert freed.as_dict(released)["state"] == "released"


def test_a_holds_state_without_an_instant_is_its_state_now() -> None:
    now = datetime.now(UTC)
    ongoing = HoldRecord("h1", "m", "r", "user", "u", now - timedelta(days=1), None, None)
    lapsed = HoldRecord("h2", "m", "r", "user", "u", now - timedelta(days=2), now, None)
    assert ongoing.as_dict()["state"] == "active"
    assert lapsed.as_dict()["state"] == "expired"


def test_holds_are_listed_oldest_first_then_by_id(settings: Settings) -> None:
    home = initialised_home(settings.home.parent / "h")
    keyring = Keyring.for_settings(home)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    # Added in this order, then renamed so that neither the ids nor the order of adding
    # agrees with (created_at, id).
    plan = [("hold-1", t0 + timedelta(days=2)), ("hold-4", t0 + timedelta(days=1)),
            ("hold-3", t0 + timedelta(days=1)), ("hold-2", t0)]  # fmt: skip
    with open_store(home.resolved_database_url) as store:
        for wanted, now in plan:
            made = add_hold(store, keyring, matter="m", reason="r", scope="user", target="u",
                            now=now)  # fmt: skip
            with store.session() as session:
                rename = sa.update(LegalHold).where(LegalHold.id == made.id).values(id=wanted)
                session.execute(rename)
                session.commit()
        assert [h.id for h in list_holds(store)] == ["hold-2", "hold-3", "hold-4", "hold-1"]
