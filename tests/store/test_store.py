"""The store on SQLite and PostgreSQL: migrations, the import log, transactions."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from consentry import __version__
from consentry.errors import BadInput
from consentry.settings import Settings
from consentry.store import (
    SQLITE_BUSY_TIMEOUT_MS,
    Base,
    ImportLog,
    ImportRun,
    ImportRunRecord,
    Store,
    StoreError,
    normalize_url,
    open_store,
)
from consentry.store.models import Subject

T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)

HEAD = "0009"
"""The newest migration shipped; bump it with each new migration."""


def _tables(store: Store) -> set[str]:
    return set(sa.inspect(store.engine).get_table_names())


def test_migrate_from_empty_creates_every_table(store: Store) -> None:
    assert store.current_revision() is None
    assert _tables(store) == set()

    revision = store.migrate()

    assert revision == store.head_revision() == HEAD
    assert store.current_revision() == HEAD
    assert _tables(store) == {"alembic_version", *Base.metadata.tables}
    meta = store.meta()
    assert meta["consentry_version"] == __version__
    created = datetime.fromisoformat(meta["schema_created_at"])
    assert created.tzinfo is not None
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=5)


def test_migrate_twice_is_a_no_op(migrated: Store) -> None:
    meta = migrated.meta()
    migrated.record_import(
        table="users",
        origin="a.csv",
        rows_read=1,
        rows_new=1,
        rows_total=1,
        started_at=T0,
        finished_at=T0,
    )

    assert migrated.migrate() == HEAD

    assert migrated.meta() == meta
    assert len(migrated.recent_imports()) == 1


def test_models_and_migrations_agree(migrated: Store) -> None:
    with migrated.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_record_and_read_back_aware_utc(migrated: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    first = migrated.record_import(
        table="users",
        origin="users.csv",
        rows_read=10,
        rows_new=7,
        rows_total=7,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
    )
    second = migrated.record_import(
        table="posts",
        origin="mastodon:postgresql+psycopg://m@db/mastodon",
        rows_read=5,
        rows_new=0,
        rows_total=5,
        # The same kind of instant, given in another offset: stored and returned as UTC.
        started_at=(T0 + timedelta(hours=1)).astimezone(plus_two),
        finished_at=(T0 + timedelta(hours=1, seconds=1)).astimezone(plus_two),
    )
    assert second > first

    runs = migrated.recent_imports()

    assert runs == [
        ImportRunRecord(
            id=second,
            table="posts",
            origin="mastodon:postgresql+psycopg://m@db/mastodon",
            rows_read=5,
            rows_new=0,
            rows_total=5,
            started_at=T0 + timedelta(hours=1),
            finished_at=T0 + timedelta(hours=1, seconds=1),
        ),
        ImportRunRecord(
            id=first,
            table="users",
            origin="users.csv",
            rows_read=10,
            rows_new=7,
            rows_total=7,
            started_at=T0,
            finished_at=T0 + timedelta(seconds=3),
        ),
    ]
    for run in runs:
        assert run.started_at.utcoffset() == timedelta(0)
        assert run.finished_at.utcoffset() == timedelta(0)
    assert migrated.recent_imports(limit=1) == runs[:1]


def test_store_is_an_import_log(migrated: Store) -> None:
    log: ImportLog = migrated
    run_id = log.record_import(
        table="users",
        origin="x",
        rows_read=0,
        rows_new=0,
        rows_total=0,
        started_at=T0,
        finished_at=T0,
    )
    assert [r.id for r in log.recent_imports()] == [run_id]


def test_naive_datetimes_are_refused(migrated: Store) -> None:
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        migrated.record_import(
            table="users",
            origin="x",
            rows_read=0,
            rows_new=0,
            rows_total=0,
            started_at=T0.replace(tzinfo=None),
            finished_at=T0,
        )
    assert migrated.recent_imports() == []


@pytest.mark.parametrize(
    ("rows_read", "finished_at"),
    [(-1, T0), (1, T0 - timedelta(microseconds=1))],
    ids=["negative-count", "finished-before-start"],
)
def test_check_constraints(migrated: Store, rows_read: int, finished_at: datetime) -> None:
    with pytest.raises(sa.exc.IntegrityError):
        migrated.record_import(
            table="users",
            origin="x",
            rows_read=rows_read,
            rows_new=0,
            rows_total=0,
            started_at=T0,
            finished_at=finished_at,
        )
    assert migrated.recent_imports() == []


class BoomError(Exception):
    pass


def _add_run_then_fail(store: Store) -> None:
    with store.session() as session:
        session.add(
            ImportRun(
                table_name="users",
                origin="x",
                rows_read=1,
                rows_new=1,
                rows_total=1,
                started_at=T0,
                finished_at=T0,
            )
        )
        session.flush()
        raise BoomError


def test_rollback_leaves_nothing(migrated: Store) -> None:
    with pytest.raises(BoomError):
        _add_run_then_fail(migrated)

    assert migrated.recent_imports() == []
    with migrated.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportRun)) == 0


def test_session_commits_on_success(migrated: Store) -> None:
    with migrated.session() as session:
        session.add(
            ImportRun(
                table_name="posts",
                origin="y",
                rows_read=2,
                rows_new=2,
                rows_total=2,
                started_at=T0,
                finished_at=T0,
            )
        )
    assert [r.table for r in migrated.recent_imports()] == ["posts"]


_SUBJECTS_CREATED_BY = (
    sa.select(Subject.user_id, Subject.region, Subject.birth_date, Subject.created_at,
              Subject.deleted_at, sa.bindparam("asked", type_=sa.String).label("asked"))
    .where(Subject.created_at <= sa.bindparam("at"))
    .order_by(Subject.user_id)
)  # fmt: skip


def test_rows_are_what_a_connection_would_give(migrated: Store) -> None:
    with migrated.session() as session:
        session.add_all([
            Subject(user_id="a", region="DE", birth_date=date(1990, 4, 1), created_at=T0),
            Subject(user_id="b", region=None, birth_date=None,
                    created_at=T0 + timedelta(days=1), deleted_at=T0 + timedelta(days=2)),
            Subject(user_id="c", created_at=T0 + timedelta(days=30)),
        ])  # fmt: skip
    for at in (T0 - timedelta(seconds=1), T0, T0 + timedelta(days=3),
               T0.astimezone(timezone(timedelta(hours=9))) + timedelta(days=1)):  # fmt: skip
        params = {"asked": "x", "at": at}
        with migrated.engine.connect() as conn:
            expected = [tuple(row) for row in conn.execute(_SUBJECTS_CREATED_BY, params)]
        assert migrated.rows(_SUBJECTS_CREATED_BY, params) == expected
    rows = migrated.rows(_SUBJECTS_CREATED_BY, {"asked": "x", "at": T0 + timedelta(days=3)})
    assert rows == [
        ("a", "DE", date(1990, 4, 1), T0, None, "x"),
        ("b", None, None, T0 + timedelta(days=1), T0 + timedelta(days=2), "x"),
    ]
    assert all(row[3].tzinfo is UTC for row in rows)


def test_rows_raise_the_drivers_errors_as_sqlalchemys(store: Store) -> None:
    # Not migrated: there is no subjects table.
    with pytest.raises(sa.exc.DBAPIError):
        store.rows(_SUBJECTS_CREATED_BY, {"asked": "x", "at": T0})


def test_ping_and_backend(store: Store, store_url: str) -> None:
    assert store.ping() is True
    assert store.backend_name == ("sqlite" if store_url.startswith("sqlite") else "postgresql")


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "new" / "home")
    with open_store(settings.resolved_database_url) as store:
        store.migrate()
        assert (tmp_path / "new" / "home" / "consentry.db").is_file()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS


def _create_table_then_violate_a_key(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE scratch (id INTEGER PRIMARY KEY)"))
        conn.execute(
            sa.text("INSERT INTO store_meta (key, value) VALUES ('consentry_version', 'x')")
        )


def test_ddl_is_transactional(migrated: Store) -> None:
    # pysqlite would autocommit the DDL; the store's own BEGIN makes it roll back.
    with pytest.raises(sa.exc.IntegrityError):
        _create_table_then_violate_a_key(migrated)
    assert "scratch" not in _tables(migrated)


@pytest.mark.postgres
def test_postgres_tables_land_in_the_url_schema(postgres_url: str) -> None:
    with open_store(postgres_url) as store:
        store.migrate()
        with store.engine.connect() as conn:
            schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
            # Other schemas may belong to tests running at the same time: look at this one
            # and at `public`, where the tables would land if the URL's schema were ignored.
            rows = conn.execute(
                sa.text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_name IN ('alembic_version', 'import_runs', 'store_meta') "
                    "AND table_schema IN (:schema, 'public')"
                ),
                {"schema": schema},
            ).all()
    assert isinstance(schema, str)
    assert schema.startswith("t_")
    assert sorted(rows) == [
        (schema, "alembic_version"),
        (schema, "import_runs"),
        (schema, "store_meta"),
    ]


@pytest.mark.postgres
def test_postgres_returns_utc_whatever_the_session_time_zone(postgres_url: str) -> None:
    tokyo = postgres_url.replace("options=", "options=-ctimezone%3DAsia/Tokyo%20")
    with open_store(tokyo) as store:
        store.migrate()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW timezone").scalar() == "Asia/Tokyo"
        store.record_import(
            table="users",
            origin="x",
            rows_read=0,
            rows_new=0,
            rows_total=0,
            started_at=T0,
            finished_at=T0,
        )
        (run,) = store.recent_imports()
    assert run.started_at == T0
    assert run.started_at.tzinfo is UTC


def test_url_normalisation() -> None:
    assert normalize_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(BadInput, match="unsupported driver 'mysql'"):
        normalize_url("mysql://u@h/db")
    with pytest.raises(BadInput, match="database_url"):
        normalize_url("not a url")


def test_describe_hides_the_password() -> None:
    with open_store("postgresql://alice:s3cret@db.example:5432/consentry") as store:
        assert store.describe() == "postgresql+psycopg://alice:***@db.example:5432/consentry"
        assert "s3cret" not in store.describe()


def test_unreachable_store_is_a_clean_error() -> None:
    with open_store("postgresql://nobody@127.0.0.1:1/none") as store:
        assert store.ping() is False
        with pytest.raises(StoreError, match=r"cannot migrate the store at .*127\.0\.0\.1:1"):
            store.migrate()
        with pytest.raises(StoreError, match="cannot read the store"):
            store.current_revision()


def test_rows_leave_pooled_connections_as_they_found_them(migrated: Store) -> None:
    # A read, and a failed one, then a transaction that fails on a connection they used:
    # nothing of it remains (on PostgreSQL the read's autocommit did not outlive it).
    failing: Any = sa.select(Subject.user_id, sa.literal_column("no_such_column")).where(
        Subject.user_id == sa.bindparam("asked", type_=sa.String)
    )
    assert migrated.rows(_SUBJECTS_CREATED_BY, {"asked": "x", "at": T0}) == []
    with pytest.raises(sa.exc.DBAPIError):
        migrated.rows(failing, {"asked": "x"})

    def failed_transaction() -> None:
        with migrated.session() as session:
            session.add(Subject(user_id="z", created_at=T0))
            session.flush()
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        failed_transaction()
    assert migrated.rows(_SUBJECTS_CREATED_BY, {"asked": "x", "at": T0 + timedelta(days=1)}) == []
