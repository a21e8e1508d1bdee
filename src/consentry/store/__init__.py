"""The control-plane store (SQLAlchemy 2 + Alembic): SQLite in the home, or PostgreSQL.

Use `open_store(settings.resolved_database_url)`, then `Store.migrate()`; core code that
only records or lists imports depends on the `ImportLog` protocol. See docs/store.md.
"""

from consentry.store.models import NAMING_CONVENTION, Base, ImportRun, StoreMeta, UtcDateTime
from consentry.store.store import (
    SQLITE_BUSY_TIMEOUT_MS,
    ImportLog,
    ImportRunRecord,
    Store,
    StoreError,
    normalize_url,
    open_store,
)

__all__ = [
    "NAMING_CONVENTION",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Base",
    "ImportLog",
    "ImportRun",
    "ImportRunRecord",
    "Store",
    "StoreError",
    "StoreMeta",
    "UtcDateTime",
    "normalize_url",
    "open_store",
]
