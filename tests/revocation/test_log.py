"""The bulk log writer's value formatting equals what the ORM writes, so rows appended in
bulk read back exactly like rows written one by one."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from consentry.revocation.log import _SQLITE_INSTANT, _json_lists, _log_column

instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)


@given(st.lists(st.one_of(st.none(), st.lists(st.text(max_size=8), max_size=4)), max_size=30))
def test_delivery_id_lists_are_the_json_the_orm_stores(values: list[list[str] | None]) -> None:
    # Plain ids take the vectorised path; any text needing escapes takes json.dumps.
    column = pa.chunked_array([pa.array(values, pa.list_(pa.string()))])
    assert _json_lists(column) == [None if v is None else json.dumps(v) for v in values]


@given(st.lists(st.lists(st.from_regex(r"dlv-[0-9a-f]{1,12}", fullmatch=True), max_size=3)))
def test_plain_delivery_ids_take_the_vectorised_path(values: list[list[str]]) -> None:
    column = pa.chunked_array([pa.array(values, pa.list_(pa.string()))])
    assert _json_lists(column) == [json.dumps(v) for v in values]


@given(st.lists(instants, max_size=20))
def test_sqlite_instants_are_written_and_read_as_the_orm_does(values: list[datetime]) -> None:
    bind = sqlite.DATETIME().bind_processor(sqlite.dialect())  # type: ignore[no-untyped-call]
    assert bind is not None
    written = pc.strftime(pa.array(values, pa.timestamp("us", tz="UTC")), _SQLITE_INSTANT)
    expected = [bind(v.replace(tzinfo=None)) for v in values]
    assert written.to_pylist() == expected
    read = _log_column(expected, pa.timestamp("us", tz="UTC"), postgres=False)
    assert read.to_pylist() == values
