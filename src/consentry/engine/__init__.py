"""The data plane: Ibis over embedded DuckDB or PySpark, reading the Parquet lake.

See docs/engines.md for the lake layout, snapshots and engine selection.
"""

from consentry.engine.backends import ENGINES, connect, connect_for, spark_session
from consentry.engine.lake import PARQUET_COMPRESSION, ROWS_PER_PART, Lake

__all__ = [
    "ENGINES",
    "PARQUET_COMPRESSION",
    "ROWS_PER_PART",
    "Lake",
    "connect",
    "connect_for",
    "spark_session",
]
