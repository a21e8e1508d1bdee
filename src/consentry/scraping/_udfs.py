"""Engine built-ins Ibis does not wrap: microseconds since the epoch of a UTC timestamp.

No `from __future__ import annotations` here: Ibis reads the UDF signatures from real
annotation objects. Imported lazily (importing Ibis takes about a second).
"""

import ibis
import ibis.expr.datatypes as dt

__all__ = ["unix_micros"]


@ibis.udf.scalar.builtin(name="unix_micros")  # type: ignore[untyped-decorator]
def unix_micros(ts: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """Spark's `unix_micros` (DuckDB's `epoch_us`, as sqlglot writes it there): exact
    microseconds, negative before 1970."""
