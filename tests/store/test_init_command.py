"""`consentry init`: creates the home, the lake directory and a migrated store; idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.keys import encode_master_key
from consentry.store import open_store

HEAD = "0009"
"""The newest migration shipped; bump it with each new migration."""


@pytest.fixture(autouse=True)
def _no_ambient_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("CONSENTRY_HOME", raising=False)
    monkeypatch.delenv("CONSENTRY_MASTER_KEY", raising=False)


def _init_json(home: Path) -> dict[str, object]:
    result = CliRunner().invoke(app, ["--home", str(home), "init", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def test_init_creates_home_lake_and_store(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"

    report = _init_json(home)

    assert report["home"] == str(home)
    assert report["home_created"] is True
    assert report["lake"] == str(home / "lake")
    assert report["lake_created"] is True
    store = report["store"]
    assert isinstance(store, dict)
    assert store["backend"] == "sqlite"
    assert store["url"] == f"sqlite:///{home / 'consentry.db'}"
    assert store["revision"] == HEAD
    assert store["previous_revision"] is None
    assert store["migrated"] is True
    assert (home / "lake").is_dir()
    with open_store(f"sqlite:///{home / 'consentry.db'}") as opened:
        assert opened.current_revision() == HEAD
        assert opened.meta()["schema_created_at"] == store["schema_created_at"]
    # Besides the store: the lake and the secrets, each readable by the owner only.
    assert sorted(p.name for p in home.iterdir() if not p.name.startswith("consentry.db")) == [
        "keys",
        "lake",
    ]
    assert report["keys_created"] == [
        "platform.secret",
        "pseudonym.key",
        "session.secret",
        "signing.key",
        "master.key",
    ]
    for key in (home / "keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600, key


def test_init_is_idempotent(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _init_json(home)
    second = _init_json(home)

    assert second["home_created"] is False
    assert second["lake_created"] is False
    first_store, second_store = first["store"], second["store"]
    assert isinstance(first_store, dict)
    assert isinstance(second_store, dict)
    assert second_store["migrated"] is False
    assert second_store["previous_revision"] == second_store["revision"] == HEAD
    assert second_store["schema_created_at"] == first_store["schema_created_at"]


def test_init_prints_what_it_did(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["--home", str(home), "init"])
    assert result.exit_code == 0, result.output
    assert f"home   {home}  (created)" in result.stdout
    assert f"lake   {home / 'lake'}  (created)" in result.stdout
    assert "store  sqlite" in result.stdout
    assert f"at revision {HEAD} (migrated from empty)" in result.stdout

    again = CliRunner().invoke(app, ["--home", str(home), "init"])
    assert again.exit_code == 0, again.output
    assert "(created)" not in again.stdout
    assert f"at revision {HEAD} (up to date)" in again.stdout


@pytest.mark.postgres
def test_init_uses_the_configured_postgres_store(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENTRY_DATABASE_URL", postgres_url)
    home = tmp_path / "home"

    report = _init_json(home)

    store = report["store"]
    assert isinstance(store, dict)
    assert store["backend"] == "postgresql"
    assert store["revision"] == HEAD
    assert not (home / "consentry.db").exists()
    with open_store(postgres_url) as opened:
        assert opened.current_revision() == HEAD


def test_init_reports_an_unreachable_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_DATABASE_URL", "postgresql://nobody:pw@127.0.0.1:1/none")
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "init"])
    assert result.exit_code == 1
    stderr = " ".join(result.stderr.split())  # Rich wraps long lines
    assert "cannot read the store at postgresql+psycopg://nobody:***@127.0.0.1:1/none" in stderr
    assert "pw@" not in stderr


def test_init_rejects_an_unsupported_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_DATABASE_URL", "mysql://u@h/db")
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "home"), "init"])
    assert result.exit_code == 2
    assert "database_url: unsupported driver 'mysql'" in " ".join(result.stderr.split())


def test_init_with_an_environment_master_key_creates_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENTRY_MASTER_KEY", encode_master_key(bytes(32)))
    home = tmp_path / "home"
    report = _init_json(home)
    assert "master.key" not in report["keys_created"]  # type: ignore[operator]
    assert not (home / "keys" / "master.key").exists()

    monkeypatch.setenv("CONSENTRY_MASTER_KEY", "too-short-")
    result = CliRunner().invoke(app, ["--home", str(tmp_path / "other"), "init"])
    assert result.exit_code == 2
    assert "CONSENTRY_MASTER_KEY: the master key decodes to" in " ".join(result.stderr.split())
