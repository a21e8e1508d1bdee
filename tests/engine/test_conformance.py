"""DuckDB and Spark run the same Ibis query over the same lake table and agree row for row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from consentry.engine import Lake, connect
from consentry.sources import import_arrow


def _access_events(rows: int = 3000) -> pa.Table:
    rng = np.random.default_rng(11)
    start = np.datetime64("2024-03-30T00:00:00", "us")
    offsets = rng.integers(0, 5 * 86_400 * 1_000_000, rows).astype("timedelta64[us]")
    return pa.table(
        {
            "request_id": [f"r{i:05d}" for i in range(rows)],
            "ts": pa.array(start + offsets, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
            "credential": np.array(["key-a", "key-b", "10.0.0.1", "acct-9"])[
                rng.integers(0, 4, rows)
            ],
            "posts": rng.integers(0, 500, rows),
            "endpoint": pa.array(
                np.array(["/search", "/timeline", ""])[rng.integers(0, 3, rows)]
            ).cast(pa.string()),
        }
    )


def _query(events: ir.Table) -> ir.Table:
    """Filter, daily group-by per credential, then a running total and rank per credential."""
    served = events.filter((events.posts > 10) & (events.endpoint != ""))
    daily = served.group_by(credential=served.credential, day=served.ts.truncate("D")).aggregate(
        requests=served.count(),
        posts=served.posts.sum(),
        first_at=served.ts.min(),
        last_at=served.ts.max(),
    )
    per_credential = ibis.window(group_by=daily.credential, order_by=daily.day)
    return daily.mutate(
        running_posts=daily.posts.sum().over(per_credential),
        day_number=ibis.row_number().over(per_credential),
        previous_posts=daily.posts.lag().over(per_credential),
    )


def _normalised(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows as plain tuples, instants as UTC datetimes, sorted."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            values = out[column]
            if values.dt.tz is None:
                values = values.dt.tz_localize("UTC")
            out[column] = values.dt.tz_convert("UTC")
    rows = [
        tuple(
            None
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT
            else v.to_pydatetime()
            if isinstance(v, pd.Timestamp)
            else int(v)
            if isinstance(v, np.integer | float) and float(v).is_integer()
            else v
            for v in row
        )
        for row in out.itertuples(index=False)
    ]
    return sorted(rows, key=lambda r: (r[0], r[1]))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake(tmp_path_factory.mktemp("conformance") / "lake")
    import_arrow(lake, "access_events", _access_events(), origin="test")
    return lake


def test_duckdb_query_shape(lake: Lake) -> None:
    result = _query(lake.table(connect("duckdb"), "access_events")).execute()
    assert len(result) == 20  # 4 credentials x 5 days
    assert result["day_number"].max() == 4  # ibis row_number() counts from 0
    first = result.sort_values(["credential", "day"]).iloc[0]
    # Ibis truncates to a zone-less timestamp; the lake's instants are UTC.
    assert first["day"].strftime("%Y-%m-%d %H:%M:%S") == "2024-03-30 00:00:00"
    assert first["first_at"].to_pydatetime() >= datetime(2024, 3, 30, tzinfo=UTC)


@pytest.mark.spark
def test_duckdb_and_spark_agree_row_for_row(lake: Lake, spark_session: Any) -> None:
    on_duckdb = _query(lake.table(connect("duckdb"), "access_events")).execute()
    spark = connect("spark", spark=spark_session)
    on_spark = _query(lake.table(spark, "access_events")).execute()
    assert list(on_spark.columns) == list(on_duckdb.columns)
    assert _normalised(on_spark) == _normalised(on_duckdb)
    # A missing canonical table is an empty table with the canonical schema on Spark too.
    assert lake.table(spark, "users").count().execute() == 0
