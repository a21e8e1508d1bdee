"""Alembic environment: migrate the connection the store hands over.

1. `Store.migrate()` opens a transaction on its own engine and passes the connection in
   `config.attributes["connection"]`; migrations run on it, so a PostgreSQL `search_path`
   from the URL decides the schema of every table and of `alembic_version`.
2. Without a connection (e.g. the `alembic` command line) the URL comes from
   `sqlalchemy.url` or CONSENTRY_DATABASE_URL, through `open_store` so SQLite pragmas apply.
3. SQLite runs in batch mode so later migrations can alter tables (copy-and-move).
4. Offline (SQL script) mode is not supported: the store is always migrated live.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy.engine import Connection

from consentry.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate the handed-over connection, else one opened from the configured URL."""
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    from consentry.store.store import open_store

    url = config.get_main_option("sqlalchemy.url") or os.environ.get("CONSENTRY_DATABASE_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url or CONSENTRY_DATABASE_URL to migrate")
    store = open_store(url)
    try:
        with store.engine.begin() as conn:
            _run(conn)
    finally:
        store.close()


if context.is_offline_mode():
    raise RuntimeError("offline migrations are not supported; run `consentry init`")
run_migrations_online()
