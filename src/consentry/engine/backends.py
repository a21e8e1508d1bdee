"""Ibis backends for the data plane: embedded DuckDB (default) or PySpark.

Both run the same Ibis expressions; tests/engine checks they agree row for row.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from consentry.errors import BadInput, Problem

if TYPE_CHECKING:
    import ibis
    from pyspark.sql import SparkSession

__all__ = ["ENGINES", "connect", "spark_session"]

ENGINES: tuple[str, ...] = ("duckdb", "spark")
"""Engine names accepted by `connect` (and by CONSENTRY_ENGINE / `--engine`)."""


def spark_session(master: str = "local[2]") -> SparkSession:
    """The process-wide Spark session, created on first use.

    1. Arrow transfers on, session time zone UTC (the lake stores UTC instants), 4 shuffle
       partitions (local jobs are small; the default 200 makes every group-by slow), no UI.
    2. `getOrCreate`, so every caller (and every test) shares one JVM: starting one costs ~9 s.
    3. Log level WARN so Spark's INFO chatter does not bury Consentry's output.
    """
    # Imported lazily: pyspark is an optional extra and slow to import.
    from pyspark.sql import SparkSession

    # The executors must run the same interpreter as the driver (the venv's).
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON", "python3"))
    builder: Any = SparkSession.builder
    session: SparkSession = (
        builder.master(master)
        .appName("consentry")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("WARN")
    return session


def connect(
    engine: str = "duckdb",
    *,
    spark_master: str = "local[2]",
    spark: SparkSession | None = None,
) -> ibis.BaseBackend:
    """An Ibis backend for `engine`.

    1. `duckdb`: a fresh in-process DuckDB database (in memory; lake tables are read from
       Parquet, nothing is persisted by the engine).
    2. `spark`: PySpark over `spark` if given, else the shared `spark_session(spark_master)`.
    3. Anything else is bad input naming the known engines.
    """
    # Imported here: Ibis takes about a second to import and most CLI commands never need it.
    import ibis

    if engine == "duckdb":
        con = ibis.duckdb.connect()
        # Lake instants are UTC; DuckDB would otherwise render them in the host's zone.
        con.raw_sql("SET TimeZone = 'UTC'")
        # Ibis 12 compiles array lambdas as `x -> ...`, which DuckDB 2 refuses unless asked.
        con.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
        return con
    if engine == "spark":
        session = spark if spark is not None else spark_session(spark_master)
        return ibis.pyspark.connect(session)
    raise BadInput(
        Problem(
            location="engine",
            row=None,
            field=None,
            message=f"unknown engine {engine!r}; known engines: {', '.join(ENGINES)}",
        )
    )
