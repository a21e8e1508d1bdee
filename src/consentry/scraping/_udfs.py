"""Engine built-ins Ibis does not wrap: microseconds since the epoch of a UTC timestamp.

No `from __future__ import annotations` here: Ibis reads the UDF signatures from real
annotation objects. Imported lazily (importing Ibis takes about a second).
"""

import ibis
import ibis.expr.datatypes as dt

__all__ = ["duckdb_epoch_us", "spark_unix_micros"]


@ibis.udf.scalar.builtin(name="epoch_us")  # type: ignore[untyped-decorator]
def duckdb_epoch_us(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """DuckDB's `epoch_us`: exact microseconds, negative before 1970."""


@ibis.udf.scalar.builtin(name="unix_micros")  # type: ignore[untyped-decorator]
def spark_unix_micros(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """Spark's `unix_micros`: exact microseconds, negative before 1970."""
