"""UtcDateTime: any aware instant goes in and comes back as the same instant in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
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


def test_constraint_names_follow_the_convention() -> None:
    assert Base.metadata.naming_convention == NAMING_CONVENTION
    names = {c.name for table in Base.metadata.tables.values() for c in table.constraints} | {
        i.name for table in Base.metadata.tables.values() for i in table.indexes
    }
    assert names == {
        "pk_import_runs",
        "pk_store_meta",
        "ck_import_runs_rows_non_negative",
        "ck_import_runs_finished_after_started",
        "ix_import_runs_started_at",
        "pk_subjects",
        "pk_consent_events",
        "uq_consent_events_event_id",
        "ck_consent_events_choice_known",
        "ck_consent_events_source_known",
        "ix_consent_events_user_purpose_at",
        "pk_consent_state",
        "pk_audit_events",
        "ix_audit_events_event_type",
        "pk_licensees",
        "uq_licensees_name",
        "ck_licensees_period_ordered",
        "ck_licensees_disabled_after_created",
    }
