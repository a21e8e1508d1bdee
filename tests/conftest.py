"""Fixtures shared by the whole suite: isolated homes, PostgreSQL schemas, Spark."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from consentry.settings import Settings
from tests.services import ensure_postgres

os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON", "python3"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty Consentry home for one test."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings pointing at the per-test home (SQLite store)."""
    return Settings(home=home)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL for a fresh, empty PostgreSQL schema on the real server; dropped afterwards."""
    base = ensure_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{base}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session for the whole run (it takes ~10 s to start)."""
    from consentry.engine import spark_session as make_session

    session = make_session(master=os.environ.get("CONSENTRY_SPARK_MASTER", "local[2]"))
    yield session
    session.stop()
