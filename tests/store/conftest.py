"""A `store` fixture run once on SQLite (in a tmp home) and once on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consentry.settings import Settings
from consentry.store import Store, open_store


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    """The default SQLite URL of a tmp home, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return settings.resolved_database_url
    url = request.getfixturevalue("postgres_url")
    assert isinstance(url, str)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An un-migrated store on each backend."""
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def migrated(store: Store) -> Store:
    """A store migrated to head."""
    store.migrate()
    return store
