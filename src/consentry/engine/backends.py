"""Ibis backends for the data plane: embedded DuckDB (default) or PySpark.

Both run the same Ibis expressions; tests/engine checks they agree row for row.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consentry.errors import BadInput, Problem
from consentry.settings import Settings

if TYPE_CHECKING:
    import ibis
    from pyspark.sql import SparkSession

__all__ = ["ENGINES", "check_spark_master", "connect", "connect_for", "spark_session"]

ENGINES: tuple[str, ...] = ("duckdb", "spark")
"""Engine names accepted by `connect` (and by CONSENTRY_ENGINE / `--engine`)."""


_LOCAL_MASTER = re.compile(r"local(\[(\*|[1-9][0-9]*)(,\s*[1-9][0-9]*)?\])?")
_STANDALONE_MASTER = re.compile(r"spark://([^\s/:,]+:[0-9]{1,5})(,[^\s/:,]+:[0-9]{1,5})*")
_OTHER_MASTER = re.compile(r"yarn|k8s://\S+")
_MASTER_CONNECT_SECONDS = 5.0


def check_spark_master(master: str) -> str:
    """`master` if it is a Spark master URL Consentry can use, else bad input.

    1. `local`, `local[N]`, `local[*]`, `local[N,F]`: Spark inside this process's JVM.
    2. `spark://host:port[,host:port…]`: a standalone cluster (several masters: ZooKeeper
       failover). At least one must accept a TCP connection within 5 s: otherwise Spark
       would retry for a minute before its own, vaguer error.
    3. `yarn`, `k8s://…`: passed to Spark as they are (the cluster manager checks them).
    4. Anything else names CONSENTRY_SPARK_MASTER and what it accepts.
    """
    text = master.strip()
    if _LOCAL_MASTER.fullmatch(text) or _OTHER_MASTER.fullmatch(text):
        return text
    if not _STANDALONE_MASTER.fullmatch(text):
        raise _bad_master(
            f"{master!r} is not a Spark master URL: local[N], local[*], spark://host:port, "
            "yarn or k8s://…"
        )
    problems = []
    for address in text.removeprefix("spark://").split(","):
        host, port = address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), _MASTER_CONNECT_SECONDS).close()
        except (OSError, ValueError) as error:
            problems.append(f"{address}: {error}")
        else:
            return text
    raise _bad_master(f"no Spark master answers at {text} ({'; '.join(problems)})")


def _bad_master(message: str) -> BadInput:
    return BadInput(Problem("CONSENTRY_SPARK_MASTER", None, None, message))


def spark_session(master: str = "local[2]") -> SparkSession:
    """The process-wide Spark session, created on first use.

    1. `master` is checked first (`check_spark_master`): a standalone cluster must answer.
    2. Arrow transfers on, session time zone UTC (the lake stores UTC instants), 4 shuffle
       partitions (local jobs are small; the default 200 makes every group-by slow), no UI.
    3. `getOrCreate`, so every caller (and every test) shares one JVM: starting one costs ~9 s.
    4. Log level WARN so Spark's INFO chatter does not bury Consentry's output.
    """
    master = check_spark_master(master)
    # Imported lazily: pyspark is an optional extra and slow to import.
    from pyspark.sql import SparkSession

    # Python workers, wherever they start, run this interpreter (the venv's, with
    # Consentry's dependencies), not whatever `python3` their PATH finds.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
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


def _duckdb_size(text: str) -> str:
    """A DuckDB size such as `1GB` or `512MB`; anything else is bad input."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", text.strip()):
        raise BadInput(
            Problem("CONSENTRY_DUCKDB_MEMORY_LIMIT", None, None, f"{text!r} is not a size like 1GB")
        )
    return text.strip()


def connect_for(settings: Settings, engine: str | None = None) -> ibis.BaseBackend:
    """The backend the settings ask for (engine, Spark master, DuckDB memory and spill).

    Spark on a lake on object storage is refused before a JVM starts: Spark reads the
    tables' files itself and would need the hadoop-aws JARs (docs/engines.md).
    """
    chosen = engine or settings.engine
    if chosen == "spark" and settings.lake_uri:
        raise BadInput(
            Problem(
                "command line",
                None,
                "--engine",
                f"the lake at {settings.lake_uri} is on object storage: use --engine duckdb "
                "(Spark would need the hadoop-aws JARs; docs/engines.md)",
            )
        )
    return connect(
        chosen,
        spark_master=settings.spark_master,
        memory_limit=settings.duckdb_memory_limit,
        temp_directory=settings.home / "tmp",
    )


def connect(
    engine: str = "duckdb",
    *,
    spark_master: str = "local[2]",
    spark: SparkSession | None = None,
    memory_limit: str | None = None,
    temp_directory: Path | None = None,
) -> ibis.BaseBackend:
    """An Ibis backend for `engine`.

    1. `duckdb`: a fresh in-process DuckDB database (in memory; lake tables are read from
       Parquet, nothing is persisted by the engine).
    2. `spark`: PySpark over `spark` if given, else the shared `spark_session(spark_master)`.
    3. Anything else is bad input naming the known engines.
    4. DuckDB's `memory_limit` (e.g. `1GB`) bounds its memory: sorts and joins beyond it
       spill to `temp_directory` instead of growing the process.
    """
    # Imported here: Ibis takes about a second to import and most CLI commands never need it.
    import ibis

    if engine == "duckdb":
        con = ibis.duckdb.connect()
        # Lake instants are UTC; DuckDB would otherwise render them in the host's zone.
        con.raw_sql("SET TimeZone = 'UTC'")
        # Ibis 12 compiles array lambdas as `x -> ...`, which DuckDB 2 refuses unless asked.
        con.raw_sql("SET lambda_syntax = 'ENABLE_SINGLE_ARROW'")
        if memory_limit:
            con.raw_sql(f"SET memory_limit = '{_duckdb_size(memory_limit)}'")
        if temp_directory is not None:
            temp_directory.mkdir(parents=True, exist_ok=True)
            con.raw_sql(f"SET temp_directory = '{str(temp_directory).replace(chr(39), '')}'")
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
