"""Stores for the audit tests: a migrated SQLite home store and a migrated PostgreSQL schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consentry.keys import Keyring
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import Store, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Store]:
    """A migrated store on each backend."""
    if request.param == "sqlite":
        url = settings.resolved_database_url
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_store(url)
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def signer(settings: Settings) -> Signer:
    return Signer.from_keyring(Keyring.for_settings(settings))
