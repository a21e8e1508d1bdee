"""`POST /v1/meter/events`, `GET /v1/meter/alerts`, and the admin pages."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.cli.main import app
from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings


def bearer(settings: Settings, role: str) -> dict[str, str]:
    token = issue_token(Keyring.for_home(settings.home).platform_secret, "ops", role)  # type: ignore[arg-type]
    return {"Authorization": f"Bearer {token}"}


def test_meter_endpoints_count_alert_and_need_an_admin(settings: Settings) -> None:
    init_home(settings)
    client = TestClient(create_app(settings))
    batch = {
        "events": [
            {
                "request_id": f"r{i}",
                "ts": f"2025-03-05T00:{i:02d}:00Z",
                "credential": "ak_x",
                "posts": 300_000,
            }
            for i in range(4)
        ]
    }
    assert client.post("/v1/meter/events", json=batch).status_code == 401
    assert (
        client.post("/v1/meter/events", json=batch, headers=bearer(settings, "user")).status_code
        == 403
    )
    response = client.post("/v1/meter/events", json=batch, headers=bearer(settings, "admin"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 4
    assert body["entities"] == [
        {"entity": "ak_x", "latest": "2025-03-05T00:03:00Z", "lower": 1_200_000, "upper": 1_200_000}
    ]
    assert [(a["level"], a["upper"]) for a in body["alerts"]] == [
        (50, 600_000),
        (80, 900_000),
        (100, 1_200_000),
    ]
    alerts = client.get("/v1/meter/alerts", headers=bearer(settings, "admin")).json()
    assert alerts["threshold_posts"] == 1_000_000
    assert len(alerts["alerts"]) == 3
    bad = {
        "events": [{"request_id": "r", "ts": "2025-03-05T00:00:00", "credential": "a", "posts": -1}]
    }
    assert (
        client.post("/v1/meter/events", json=bad, headers=bearer(settings, "admin")).status_code
        == 422
    )


def sign_in(client: TestClient, settings: Settings) -> None:
    page = client.get("/admin/signin").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    token = issue_token(Keyring.for_home(settings.home).platform_secret, "ops", "admin")
    response = client.post(
        "/admin/signin", data={"token": token, "csrf": csrf.group(1)}, follow_redirects=False
    )
    assert response.status_code == 303


def test_admin_pages_rank_entities_and_link_evidence(settings: Settings, demo_dir: Path) -> None:
    init_home(settings)
    runner = CliRunner()
    files = [
        "--events",
        str(demo_dir / "access_events.parquet"),
        "--entities",
        str(demo_dir / "entities.parquet"),
    ]
    assert (
        runner.invoke(app, ["--home", str(settings.home), "scraping", "assess", *files]).exit_code
        == 0
    )
    done = runner.invoke(
        app, ["--home", str(settings.home), "scraping", "evidence", "scraper-alpha", *files]
    )
    assert done.exit_code == 0, done.stderr
    client = TestClient(create_app(settings))
    assert client.get("/admin/scraping", follow_redirects=False).status_code == 303
    sign_in(client, settings)
    html = client.get("/admin/scraping").text
    order = re.findall(r"<tr><td><code>([^<]+)</code></td>", html)
    assert order[:3] == ["scraper-alpha", "scraper-charlie", "scraper-bravo"]
    assert html.count("<polyline") >= 3
    assert 'href="/admin/scraping/evidence/scraper-alpha/report.html"' in html
    # Money as money (as the transparency report writes it): the policy's currency, thousands
    # separated, the total in a count card.
    assert "USD 52,500.00" in html
    assert re.search(r'<dd data-count="total">USD 70,500.00</dd>', html)
    # scraper-charlie is billed but has no pack: one hint for the whole page, not a command
    # per row.
    assert html.count("consentry scraping evidence") == 1
    report = client.get("/admin/scraping/evidence/scraper-alpha/report.html")
    assert report.status_code == 200
    assert "USD 52,500.00" in report.text
    assert client.get("/admin/scraping/evidence/scraper-bravo/report.html").status_code == 404
    assert client.get("/admin/scraping/evidence/..%2Fx/report.html").status_code == 404
    meter_page = client.get("/admin/meter").text
    assert '<script src="/static/meter.js"></script>' in meter_page
    assert client.get("/static/meter.js").status_code == 200
    data = client.get("/admin/meter/data").json()
    assert data["threshold_posts"] == 1_000_000
    assert data["events"] == 0


def test_api_workers_share_the_redis_meter(settings: Settings) -> None:
    import dataclasses
    import uuid

    from consentry.scraping.meter import RedisMeter
    from tests.services import ensure_redis

    ensure_redis()
    init_home(settings)
    shared = dataclasses.replace(settings, meter_backend="redis")
    workers = [TestClient(create_app(shared)), TestClient(create_app(shared))]
    credential = f"ak_{uuid.uuid4().hex}"
    headers = bearer(settings, "admin")
    replies = []
    for i, client in enumerate(workers):
        batch = {
            "events": [
                {
                    "request_id": f"r{i}{j}",
                    "ts": f"2025-03-05T00:0{i}:{j:02d}Z",
                    "credential": credential,
                    "posts": 300_000,
                }
                for j in range(2)
            ]
        }
        response = client.post("/v1/meter/events", json=batch, headers=headers)
        assert response.status_code == 200, response.text
        replies.append(response.json())
    # The second worker sees the first worker's posts: one counter in Redis.
    assert replies[0]["entities"][0]["upper"] == 600_000
    assert replies[1]["entities"][0]["upper"] == 1_200_000
    assert [a["level"] for a in replies[1]["alerts"]] == [80, 100]
    meter = workers[0].app.state.scraping_meter  # type: ignore[attr-defined]
    assert isinstance(meter.backend, RedisMeter)
    try:
        levels = [
            a["level"]
            for a in workers[0].get("/v1/meter/alerts", headers=headers).json()["alerts"]
            if a["entity"] == credential
        ]
        assert levels == [50, 80, 100]
    finally:
        redis_client = meter.backend.client
        for key in redis_client.scan_iter(match=f"{meter.backend.prefix}:{{{credential}}}:*"):
            redis_client.delete(key)
        redis_client.srem(f"{meter.backend.prefix}:alerted", credential)
