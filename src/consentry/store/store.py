"""The control-plane store: one SQLAlchemy engine, its migrations and the import log.

SQLite (the default, a file in the Consentry home) runs in WAL mode with foreign keys on;
PostgreSQL is used through psycopg 3. Both are migrated by Alembic to the same schema.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from consentry.errors import BadInput, ConsentryError, Problem
from consentry.store.models import ImportRun, StoreMeta

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "ImportLog",
    "ImportRunRecord",
    "Store",
    "StoreError",
    "normalize_url",
    "open_store",
]

SQLITE_BUSY_TIMEOUT_MS: Final = 5000
"""How long a SQLite writer waits for another writer's lock before failing."""

_ALEMBIC_INI: Final = Path(__file__).with_name("alembic.ini")
_BEGIN_OPTION: Final = "consentry_sqlite_begin"


class StoreError(ConsentryError):
    """The store cannot be reached or used (the CLI exits 1 with this message)."""


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's own message (without SQLAlchemy's statement dump and links)."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


@dataclass(frozen=True, slots=True)
class ImportRunRecord:
    """One recorded import run, as plain data (not bound to a session)."""

    id: int
    table: str
    origin: str
    rows_read: int
    rows_new: int
    rows_total: int
    started_at: datetime
    """When the import started (timezone-aware, UTC)."""
    finished_at: datetime
    """When it finished (timezone-aware, UTC)."""


class ImportLog(Protocol):
    """What importers need from the store: record a run, list recent runs."""

    def record_import(
        self,
        *,
        table: str,
        origin: str,
        rows_read: int,
        rows_new: int,
        rows_total: int,
        started_at: datetime,
        finished_at: datetime,
    ) -> int: ...

    def recent_imports(self, limit: int = 20) -> list[ImportRunRecord]: ...


def normalize_url(url: str) -> URL:
    """Parse a store URL and pick the driver Consentry ships.

    1. `postgresql://` and `postgres://` become `postgresql+psycopg://` (psycopg 3).
    2. `sqlite://…` and `postgresql+psycopg://…` are kept as they are.
    3. Anything else (other backends, other PostgreSQL drivers, unparsable text) is bad input.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(
            Problem(location="database URL", row=None, field="database_url", message=str(exc))
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise BadInput(
            Problem(
                location=parsed.render_as_string(hide_password=True),
                row=None,
                field="database_url",
                message=f"unsupported driver {parsed.drivername!r}; "
                "use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB",
            )
        )
    return parsed


def _sqlite_engine(url: URL) -> Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling skips BEGIN before DDL and some statements;
        # turn it off and emit BEGIN ourselves (the "begin" hook) so every transaction,
        # migrations included, is all-or-nothing.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock up front (waiting busy_timeout for it); used where
        # a transaction reads then writes and must not fail on a lock upgrade (migrations).
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def open_store(url: str) -> Store:
    """Open the control-plane store at `url` (no connection is made until first use).

    1. The URL is normalised (see `normalize_url`).
    2. SQLite: the file's directory is created; every connection gets
       `journal_mode=WAL`, `foreign_keys=ON` and `busy_timeout`.
    3. PostgreSQL: connections are checked before use (`pool_pre_ping`); the URL's
       `options=-csearch_path=…` decides the schema.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Store(_sqlite_engine(parsed))
    return Store(_postgresql_engine(parsed))


POOL_SIZE: Final = 20
POOL_OVERFLOW: Final = 20
PING_AFTER_IDLE_SECONDS: Final = 10.0
"""A pooled PostgreSQL connection idle longer than this is checked before it is used."""


def _postgresql_engine(url: URL) -> Engine:
    """A PostgreSQL engine whose pooled connections are checked (`SELECT 1`) before use only
    when they sat idle for PING_AFTER_IDLE_SECONDS: a connection the server or a proxy
    dropped meanwhile is replaced, and busy connections (a server under load) skip the
    round trip a check before every use would cost."""
    # Enough pooled connections for a server's concurrent requests (the thread pool runs
    # dozens): connections beyond the pool are closed when returned, and opening one costs
    # the server a process.
    engine = sa.create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(str(exc)) from exc

    return engine


@contextmanager
def _writer_turn(database: str | None) -> Iterator[None]:
    """Hold the exclusive `flock` of `<database>.writer` (created when missing) for the block;
    nothing for an in-memory database."""
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    fd = os.open(f"{database}.writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


AnySelect = sa.Select[*tuple[Any, ...]]
"""A SELECT of any columns."""


class _DriverStatement:
    """A SELECT compiled once for the driver itself, with the conversions its types make
    (their bind and result processors: what SQLAlchemy applies on every execution).

    SQLite's driver takes positional parameters, psycopg's named ones (`%(name)s`). On
    PostgreSQL the statement runs in autocommit (its own transaction: one round trip, no
    BEGIN and ROLLBACK), and the connection goes back to the pool out of autocommit, as
    `Store.reading` leaves it; a connection the error says is lost is invalidated, so the
    pool replaces it, as a SQLAlchemy connection does.
    """

    def __init__(self, statement: AnySelect, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("only a statement with plain parameters runs this way")
        positional = compiled.positiontup
        self.named = positional is None
        names = list(compiled.binds) if positional is None else positional
        self.sql = compiled.string
        self.autocommit = dialect.name == "postgresql"
        self.binds = [
            (name, compiled.binds[name], compiled.binds[name].type.dialect_impl(dialect))
            for name in names
        ]
        self.bind_processors = [impl.bind_processor(dialect) for _, _, impl in self.binds]
        self.result_processors = [
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.selected_columns
        ]

    def run(self, engine: Engine, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        values = []
        for (name, bind, _), process in zip(self.binds, self.bind_processors, strict=True):
            value = params.get(name, bind.effective_value)
            values.append(value if process is None else process(value))
        bound: Any = (
            {name: value for (name, _, _), value in zip(self.binds, values, strict=True)}
            if self.named
            else values
        )
        dialect = engine.dialect
        dbapi_error = dialect.loaded_dbapi.Error
        connection = engine.raw_connection()
        driver: Any = connection.driver_connection
        try:
            if self.autocommit:
                driver.autocommit = True
            cursor = connection.cursor()
            try:
                cursor.execute(self.sql, bound)
                fetched = cursor.fetchall()
            finally:
                cursor.close()
            if self.autocommit:
                driver.autocommit = False
        except dbapi_error as exc:
            if dialect.is_disconnect(exc, connection.dbapi_connection, None):
                connection.invalidate(exc)
            elif self.autocommit:
                driver.autocommit = False
            raise sa.exc.DBAPIError.instance(self.sql, bound, exc, dbapi_error) from exc
        finally:
            connection.close()
        processors = self.result_processors
        return [
            tuple(v if p is None else p(v) for p, v in zip(processors, row, strict=True))
            for row in fetched
        ]


class Store:
    """The control-plane database: sessions, migrations and the import log."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)
        self._driver_statements: dict[AnySelect, _DriverStatement] = {}

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def backend_name(self) -> str:
        """`sqlite` or `postgresql`."""
        return self._engine.dialect.name

    def describe(self) -> str:
        """The store URL with any password replaced by `***`."""
        return self._engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def session(self, *, immediate: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed if the block succeeds, else rolled back.

        `immediate`: on SQLite the transaction takes the write lock when it begins (BEGIN
        IMMEDIATE), so a transaction that reads before it writes cannot fail on the lock
        upgrade; and such writers of one database file first queue on a file lock beside it
        (`<database>.writer`, `flock`), which wakes the next one the moment the last one ends
        where SQLite's own busy wait sleeps in steps of up to 100 ms (the tail of every
        write's latency when several processes write). Elsewhere it changes nothing.
        """
        if immediate and self.backend_name == "sqlite":
            with _writer_turn(self._engine.url.database), self._engine.connect() as conn:
                bound = conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                with self._sessions(bind=bound) as session, session.begin():
                    yield session
            return
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads that need no transaction of their own (one statement):
        autocommit on PostgreSQL, so a read is one round trip instead of BEGIN, the read and
        ROLLBACK."""
        with self._engine.connect() as conn:
            if self.backend_name == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def rows(self, statement: AnySelect, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT that needs no transaction of its own, as tuples of the
        values SQLAlchemy would give (`conn.execute(statement, params)`).

        Through the driver itself, on a pooled connection (`_DriverStatement`). The
        statement is compiled once per store and its parameters and columns are converted
        by their types' own processors; what is skipped is the per-execution work of a
        SQLAlchemy connection (the BEGIN, events, result objects), which was three quarters
        of a point read's CPU on SQLite and a third on PostgreSQL. The statement is its own
        transaction (SQLite's connections are in autocommit mode; on PostgreSQL it runs in
        autocommit, one round trip, as `reading` does). A driver error is raised as
        SQLAlchemy's (`DBAPIError`), as the other way raises it.
        """
        prepared = self._driver_statements.get(statement)
        if prepared is None:
            prepared = _DriverStatement(statement, self._engine.dialect)
            self._driver_statements[statement] = prepared
        return prepared.run(self._engine, params)

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self._engine.connect() as conn:
                conn.execute(sa.select(1))
        except SQLAlchemyError:
            return False
        return True

    def _alembic_config(self) -> Config:
        config = Config(str(_ALEMBIC_INI))
        # Absolute, so migrations are found whatever the working directory.
        config.set_main_option("script_location", str(_ALEMBIC_INI.with_name("migrations")))
        return config

    def head_revision(self) -> str:
        """The newest migration shipped with this version of Consentry."""
        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        if head is None:
            raise StoreError("no migrations are shipped with this Consentry build")
        return head

    def current_revision(self) -> str | None:
        """The migration the database is at; None when it has never been migrated."""
        try:
            with self._engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision()
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot read the store at {self.describe()}: {_reason(exc)}"
            ) from None

    def migrate(self) -> str:
        """Upgrade the schema to the newest migration and return that revision.

        1. One transaction: on failure nothing of the upgrade remains.
        2. Concurrent migrators wait for each other (SQLite `BEGIN IMMEDIATE`,
           PostgreSQL transaction-level advisory lock per schema).
        3. Already at head: nothing changes.
        """
        config = self._alembic_config()
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
                with conn.begin():
                    if self.backend_name == "postgresql":
                        conn.execute(
                            sa.text(
                                "SELECT pg_advisory_xact_lock("
                                "hashtext('consentry.migrate:' || current_schema()))"
                            )
                        )
                    config.attributes["connection"] = conn
                    command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot migrate the store at {self.describe()}: {_reason(exc)}"
            ) from None
        revision = self.current_revision()
        if revision is None:
            raise StoreError(f"migration of {self.describe()} left no revision")
        return revision

    def meta(self) -> dict[str, str]:
        """The `store_meta` rows: schema creation instant, consentry version."""
        with self.session() as session:
            rows = session.execute(sa.select(StoreMeta.key, StoreMeta.value)).all()
        return {row[0]: row[1] for row in rows}

    def record_import(
        self,
        *,
        table: str,
        origin: str,
        rows_read: int,
        rows_new: int,
        rows_total: int,
        started_at: datetime,
        finished_at: datetime,
    ) -> int:
        """Record one import run and return its id.

        1. Instants must be timezone-aware (stored in UTC); counts must be >= 0 and
           `finished_at >= started_at` (database check constraints).
        2. Written in its own transaction.
        """
        run = ImportRun(
            table_name=table,
            origin=origin,
            rows_read=rows_read,
            rows_new=rows_new,
            rows_total=rows_total,
            started_at=started_at,
            finished_at=finished_at,
        )
        with self.session() as session:
            session.add(run)
            session.flush()
            return run.id

    def recent_imports(self, limit: int = 20) -> list[ImportRunRecord]:
        """The newest `limit` import runs, newest first (by start, then id)."""
        with self.session() as session:
            runs = session.scalars(
                sa.select(ImportRun)
                .order_by(ImportRun.started_at.desc(), ImportRun.id.desc())
                .limit(limit)
            ).all()
            return [
                ImportRunRecord(
                    id=run.id,
                    table=run.table_name,
                    origin=run.origin,
                    rows_read=run.rows_read,
                    rows_new=run.rows_new,
                    rows_total=run.rows_total,
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                )
                for run in runs
            ]
