"""The revocation pages: the user's recipients page and the admin's per-licensee view."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import RevocationRow
from consentry.web.revocations import day_bars
from tests.api.conftest import Api, make_api
from tests.web.html import parse_html
from tests.web.test_admin import sign_in as admin_sign_in

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    home = tmp_path_factory.mktemp("revocation-pages") / "home"
    home.mkdir()
    made = make_api(Settings(home=home))
    marker = home / "demo" / "demo.json"  # enables demo sign-in for these tests' users
    marker.parent.mkdir()
    marker.write_text(json.dumps({"users": 11, "seed": 1}))
    return made


def user_client(api: Api, user_id: str) -> TestClient:
    client = TestClient(create_app(api.home.settings))
    found = _CSRF.search(client.get("/signin").text)
    assert found
    response = client.post(
        "/signin", data={"user_id": user_id, "csrf": found.group(1)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    return client


def test_recipients_page_needs_a_signed_in_user(api: Api) -> None:
    client = TestClient(create_app(api.home.settings))
    response = client.get("/settings/privacy/recipients", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


def test_recipients_page_lists_licensees_with_pending_and_confirmed(api: Api) -> None:
    client = user_client(api, "u-us")
    privacy = parse_html(client.get("/settings/privacy").text)
    link = privacy.by_id("recipients-link")
    assert link is not None
    assert link.attrs["href"] == "/settings/privacy/recipients"
    doc = parse_html(client.get("/settings/privacy/recipients").text)
    rows = {
        r.attrs["data-licensee"]: r.text() for r in doc.find_all("tr") if "data-licensee" in r.attrs
    }
    assert set(rows) == {"open", "alpha"}
    assert "2 pending" in rows["alpha"]
    assert "0 confirmed" in rows["alpha"]
    assert "Third-party" in rows["alpha"] or "third" in rows["alpha"].lower()


def test_a_user_with_no_recipients_is_told_so(api: Api) -> None:
    doc = parse_html(user_client(api, "u-minor").get("/settings/privacy/recipients").text)
    assert doc.by_id("no-recipients") is not None


def test_admin_pages_need_an_admin_session(api: Api) -> None:
    client = TestClient(create_app(api.home.settings))
    for path in ("/admin/revocations", "/admin/revocations/alpha"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == "/admin/signin"
    user = user_client(api, "u-us")  # a user session is not an admin session
    assert user.get("/admin/revocations", follow_redirects=False).status_code == 303


def test_admin_sees_counts_per_licensee_and_a_chart(api: Api) -> None:
    client = TestClient(create_app(api.home.settings))
    admin_sign_in(client, api.home.settings)
    index = parse_html(client.get("/admin/revocations").text)
    table = index.by_id("revocation-licensees")
    assert table is not None
    names = [a.text() for a in table.find_all("a")]
    assert {"alpha", "beta", "open", "eu", "gone"} <= set(names)
    page = client.get("/admin/revocations/alpha")
    assert page.status_code == 200
    doc = parse_html(page.text)
    counts = {dd.attrs["data-count"]: dd.text() for dd in doc.find_all("dd")}
    # alpha's delivery: 8 records; u-us's 2 and u-de-in's 3 posts, p06 and p10 revoked.
    assert counts == {
        "delivered": "8",
        "revoked": "7",
        "confirmed": "0",
        "pending": "7",
        "overdue": "0",
    }
    today = datetime.now(UTC).date().isoformat()
    bars = [r for r in doc.find_all("rect") if r.attrs.get("data-day") == today]
    assert {b.attrs["data-kind"]: int(b.attrs["height"]) for b in bars} == {
        "revoked": 120,
        "confirmed": 0,
    }
    nav = [a.attrs["href"] for a in doc.find_all("a")]
    assert "/admin/revocations" in nav
    assert "/admin/deliveries" in nav


def test_overdue_revocations_show_on_the_admin_page(settings: Settings) -> None:
    make_api(settings)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        session.execute(
            sa.update(RevocationRow).values(
                revoked_at=datetime.now(UTC) - timedelta(days=40),
                due_at=datetime.now(UTC) - timedelta(days=10),
            )
        )
    client = TestClient(create_app(settings))
    admin_sign_in(client, settings)
    doc = parse_html(client.get("/admin/revocations/alpha").text)
    counts = {dd.attrs["data-count"]: dd.text() for dd in doc.find_all("dd")}
    assert counts["overdue"] == "7"
    assert counts["pending"] == "0"
    overdue = doc.by_id("overdue")
    assert overdue is not None
    assert len(overdue.find_all("tr")) == 8
    assert client.get("/admin/revocations/nobody").status_code == 404


def test_day_bars_scale_to_the_largest_count() -> None:
    series = [
        {"day": "2026-01-01", "revoked": 10, "confirmed": 0},
        {"day": "2026-01-02", "revoked": 1, "confirmed": 5},
    ]
    bars = day_bars(series, height=100)
    assert [(b["revoked_h"], b["confirmed_h"]) for b in bars] == [(100, 0), (10, 50)]
    assert bars[1]["x"] > bars[0]["x"]
    assert day_bars([], height=100) == []
