"""A revocation run killed part-way (SIGKILL, in a real subprocess) neither loses nor
duplicates a revocation, on SQLite and on PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.revocation import run_revocations
from consentry.settings import Settings
from consentry.sources.importer import import_arrow
from consentry.store import open_store
from consentry.store.models import RevocationRow
from tests.delivery.conftest import AS_OF, WorldPost, world_posts
from tests.revocation.conftest import RevocationHome, delivered_home

EXTRA = 4_500
"""Extra posts by u-us, so the log is written in several INSERT statements."""


def _home(settings: Settings) -> RevocationHome:
    home, _ = delivered_home(settings)
    extra = [
        WorldPost(f"px{i:05d}", "u-us", datetime(2024, 12, 1, tzinfo=UTC), f"post {i}", lang="en")
        for i in range(EXTRA)
    ]
    import_arrow(home.lake, "posts", world_posts(extra), origin="test:extra")
    home.deliver("open", as_of=AS_OF)
    home.opt_out("u-us", at=datetime.now(UTC) - timedelta(minutes=1))
    return home


def _killed_run(settings: Settings, kill_when: str) -> None:
    """`run_revocations` in a subprocess that SIGKILLs itself at `kill_when`."""
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from consentry.revocation import run_revocations
        from consentry.settings import Settings

        def die(*_):
            os.kill(os.getpid(), signal.SIGKILL)

        def on_batch(rows):
            if {kill_when!r} == "batch-2" and rows >= 4000:
                die()

        def on_progress(step):
            if {kill_when!r} == "evaluating" and step == "evaluating lineage":
                die()

        home, url = Path({str(settings.home)!r}), {settings.database_url!r}
        settings = Settings(home=home, database_url=url)
        run_revocations(settings, "open", on_batch=on_batch, on_progress=on_progress)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr


def _log(settings: Settings) -> list[tuple[str, str]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return [
            (r, d)
            for r, d in session.execute(
                sa.select(RevocationRow.record_id, RevocationRow.delivery_id)
            )
        ]


def _issued(settings: Settings) -> int:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return len(SqlAuditSink.read(session, event_type="revocation.issued"))


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_settings(request: pytest.FixtureRequest, home: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(home=home)
    url: str = request.getfixturevalue("postgres_url")
    return Settings(home=home, database_url=url)


@pytest.mark.parametrize("kill_when", ["evaluating", "batch-2"])
def test_a_killed_run_loses_and_duplicates_nothing(
    crash_settings: Settings, kill_when: str
) -> None:
    home = _home(crash_settings)
    _killed_run(home.settings, kill_when)
    assert _log(home.settings) == []  # one transaction: nothing of the killed run is visible
    assert _issued(home.settings) == 0
    report = run_revocations(home.settings, "open")
    logged = _log(home.settings)
    # Every revoked record (u-us's 2 + EXTRA posts, p06, p10) for both deliveries: the
    # later delivery carried them all again, so each is logged for that one, once.
    assert len(logged) == len(set(logged)) == EXTRA + 4
    assert report.new == EXTRA + 4
    assert len(report.revocations) == EXTRA + 4
    assert {r for r, _ in logged} == {r["record_id"] for r in report.revocations}
    assert _issued(home.settings) == 1
    assert run_revocations(home.settings, "open").new == 0
    assert len(_log(home.settings)) == EXTRA + 4
