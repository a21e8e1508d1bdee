"""The service: home page, health, OpenAPI docs with assets shipped in the package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from consentry.api.app import create_app
from consentry.cli.main import app as cli
from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.schema import arrow_schema
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.sources.importer import import_arrow
from consentry.store import open_store


def _init(home: Path) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "init"])
    assert result.exit_code == 0, result.output


def test_home_page_says_what_is_loaded(settings: Settings) -> None:
    _init(settings.home)
    users = pa.table(
        {
            "user_id": ["u1", "u2"],
            "created_at": pa.array([0, 1], pa.timestamp("us", tz="UTC")),
            "region": ["DE", "US"],
            "birth_date": pa.array([None, None], pa.date32()),
            "protected": [False, True],
            "deactivated_at": pa.array([None, None], pa.timestamp("us", tz="UTC")),
            "deleted_at": pa.array([None, None], pa.timestamp("us", tz="UTC")),
        },
        schema=arrow_schema("users"),
    )
    import_arrow(Lake.of(settings), "users", users, origin="test")
    client = TestClient(create_app(settings))
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    body = page.text
    assert "<code>users</code>" in body
    assert re.search(r"<code>users</code></td><td class=\"num\">2</td>", body)
    assert "2024-11-15" in body  # the shipped policy's version in force now
    assert "Third-party AI training" in body or "ai_training_third_party" in body


def test_home_page_on_an_empty_home(settings: Settings) -> None:
    _init(settings.home)
    page = TestClient(create_app(settings)).get("/")
    assert page.status_code == 200
    assert "Nothing is loaded yet" in page.text


def test_healthz_reports_the_store(settings: Settings) -> None:
    _init(settings.home)
    response = TestClient(create_app(settings)).get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["store"] == "sqlite"
    assert body["store_reachable"] is True


def test_healthz_is_degraded_when_the_store_is_unreachable(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = TestClient(create_app(settings)).get("/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"


def test_status_json(settings: Settings) -> None:
    _init(settings.home)
    body = TestClient(create_app(settings)).get("/v1/status").json()
    assert body["policy_version"] == "2024-11-15"
    assert "ai_training_third_party" in body["purposes"]
    assert body["store"]["backend"] == "sqlite"


def test_openapi_schema_and_docs_use_only_shipped_assets(settings: Settings) -> None:
    client = TestClient(create_app(settings))
    schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "Consentry"
    assert "/healthz" in schema["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    # No CDN: every script, stylesheet and icon the page loads is served by us.
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
    assert assets, docs.text
    assert all(a.startswith("/") for a in assets), assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    home = client.get("/")
    for asset in re.findall(r"""(?:src|href)=["']([^"']+)["']""", home.text):
        assert asset.startswith(("/", "#")), asset


INTERNAL = ("home", "policy_file")


def _bearer(settings: Settings, subject: str, role: str) -> dict[str, str]:
    token = issue_token(Keyring.for_home(settings.home).platform_secret, subject, role)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def test_status_shows_nothing_internal_without_an_admin_token(settings: Settings) -> None:
    _init(settings.home)
    client = TestClient(create_app(settings))
    for headers in ({}, _bearer(settings, "alice", "user")):
        response = client.get("/v1/status", headers=headers)
        assert response.status_code == 200
        body = response.json()
        assert not set(INTERNAL) & set(body), body
        assert "url" not in body["store"]
        assert str(settings.home) not in response.text
        assert "x-2024.yaml" not in response.text
        assert "sqlite:" not in response.text
        assert body["policy_version"] == "2024-11-15"
        head = open_store(settings.resolved_database_url).head_revision()
        assert body["store"] == {"backend": "sqlite", "revision": head, "reachable": True}
    admin = client.get("/v1/status", headers=_bearer(settings, "ops", "admin")).json()
    assert admin["home"] == str(settings.home)
    assert admin["policy_file"].endswith("x-2024.yaml")
    assert admin["store"]["url"].startswith("sqlite:")


def test_status_refuses_a_bad_token_rather_than_ignoring_it(settings: Settings) -> None:
    _init(settings.home)
    response = TestClient(create_app(settings)).get(
        "/v1/status", headers={"Authorization": "Bearer forged"}
    )
    assert response.status_code == 401


def test_the_home_page_shows_paths_only_to_an_admin_session(settings: Settings) -> None:
    _init(settings.home)
    client = TestClient(create_app(settings))
    page = client.get("/")
    assert str(settings.home) not in page.text
    assert "x-2024.yaml" not in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/signin").text)
    assert csrf
    token = _bearer(settings, "ops", "admin")["Authorization"].removeprefix("Bearer ")
    signed = client.post(
        "/admin/signin", data={"token": token, "csrf": csrf.group(1)}, follow_redirects=False
    )
    assert signed.status_code == 303
    page = client.get("/")
    assert str(settings.home) in page.text
    assert "x-2024.yaml" in page.text


def test_a_served_app_leaves_its_startup_objects_to_no_collection(settings: Settings) -> None:
    """`app_from_env` (each `serve` worker) freezes what exists once the app is built, so
    the collector's full passes no longer scan it: each used to stop a worker for ~90 ms,
    the consent GET's p99 under load (docs/benchmarks.md)."""
    _init(settings.home)
    code = (
        "import gc, json\n"
        "from consentry.api.app import app_from_env\n"
        "app_from_env()\n"
        "print(json.dumps([gc.get_freeze_count(), len(gc.get_objects(generation=2))]))\n"
    )
    env = {**os.environ, "CONSENTRY_HOME": str(settings.home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    frozen, scanned = json.loads(done.stdout.splitlines()[-1])
    assert frozen > 100_000
    assert scanned < frozen // 100
