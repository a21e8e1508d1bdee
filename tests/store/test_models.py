"""UtcDateTime: any aware instant goes in and comes back as the same instant in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine

from consentry.store import NAMING_CONVENTION, Base, UtcDateTime

# Engines are never connected; only their dialects are used.
PG = create_engine("postgresql+psycopg://u@h/db").dialect
SQLITE = create_engine("sqlite://").dialect

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=offsets
)


@given(instants)
def test_sqlite_round_trip(value: datetime) -> None:
    column = UtcDateTime()
    dialect = SQLITE
    stored = column.process_bind_param(value, dialect)
    assert stored is not None
    assert stored.tzinfo is None  # SQLite keeps the UTC wall time
    back = column.process_result_value(stored, dialect)
    assert back == value
    assert back is not None
    assert back.tzinfo is UTC


@given(instants, offsets)
def test_postgresql_round_trip(value: datetime, session_zone: timezone) -> None:
    column = UtcDateTime()
    dialect = PG
    stored = column.process_bind_param(value, dialect)
    assert stored is not None
    assert stored.tzinfo is UTC
    # PostgreSQL hands timestamptz back in the session's zone.
    back = column.process_result_value(stored.astimezone(session_zone), dialect)
    assert back == value
    assert back is not None
    assert back.tzinfo is UTC


def test_naive_and_none() -> None:
    column = UtcDateTime()
    assert column.process_bind_param(None, SQLITE) is None
    assert column.process_result_value(None, SQLITE) is None
    with pytest.raises(ValueError, match="naive datetime"):
        column.process_bind_param(datetime(2024, 1, 1), PG)


def _expected_prefix(table: sa.Table, item: object) -> str:
    """The name the naming convention gives `item` of `table`, up to its variable part."""
    if isinstance(item, sa.PrimaryKeyConstraint):
        return f"pk_{table.name}"
    if isinstance(item, sa.UniqueConstraint):
        return f"uq_{table.name}_"
    if isinstance(item, sa.CheckConstraint):
        return f"ck_{table.name}_"
    if isinstance(item, sa.ForeignKeyConstraint):
        return f"fk_{table.name}_"
    if isinstance(item, sa.Index):
        return "ix_"
    raise AssertionError(f"unexpected schema item {item!r} on {table.name}")


def test_constraint_names_follow_the_convention() -> None:
    """Every constraint and index of every table is named by NAMING_CONVENTION (so
    migrations can refer to them on every backend), and no two share a name."""
    assert Base.metadata.naming_convention == NAMING_CONVENTION
    names: list[str] = []
    wrong: list[str] = []
    for table in Base.metadata.tables.values():
        items: list[sa.Constraint | sa.Index] = [*table.constraints, *table.indexes]
        for item in items:
            name = str(item.name)
            names.append(name)
            prefix = _expected_prefix(table, item)
            exact = isinstance(item, sa.PrimaryKeyConstraint)
            if (name != prefix) if exact else not name.startswith(prefix):
                wrong.append(f"{table.name}: {name} (expected {prefix}…)")
    assert not wrong, wrong
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    # The foundation's own names, as its migrations wrote them.
    assert {
        "pk_import_runs",
        "ck_import_runs_rows_non_negative",
        "ix_import_runs_started_at",
        "uq_consent_events_event_id",
        "ix_consent_events_user_purpose_at",
        "uq_licensees_name",
        "ck_licensees_period_ordered",
    } <= set(names)
