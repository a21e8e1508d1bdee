"""The admin retention page: a chart per category, the holds and the purge history."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.keys import Keyring
from consentry.retention import CategoryPlan, apply_plan, compute_plan
from consentry.serving.auth import issue_token
from consentry.web.retention import plan_chart
from tests.delivery.conftest import LakeHome
from tests.web.html import parse_html

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _signed_in(world: LakeHome) -> TestClient:
    client = TestClient(create_app(world.settings))
    found = _CSRF.search(client.get("/admin/signin").text)
    assert found
    secret = Keyring.for_home(world.settings.home).platform_secret
    response = client.post(
        "/admin/signin",
        data={"token": issue_token(secret, "ops", "admin"), "csrf": found.group(1)},
        follow_redirects=False,
    )
    assert response.status_code == 303
    return client


def test_the_page_needs_an_admin_session(world: LakeHome) -> None:
    response = TestClient(create_app(world.settings)).get(
        "/admin/retention", follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/signin"


def test_the_page_charts_the_plan_and_lists_purges(world: LakeHome) -> None:
    apply_plan(
        world.settings,
        compute_plan(world.settings, at=datetime(2026, 1, 1, tzinfo=UTC)),
        revoker=lambda *a, **k: 0,
    )
    client = _signed_in(world)
    response = client.get("/admin/retention")
    assert response.status_code == 200, response.text
    page = parse_html(response.text)
    charts = [e for e in page.iter() if e.tag == "svg" and e.attrs.get("role") == "img"]
    assert len(charts) == 6
    assert any("posts:" in (c.attrs.get("aria-label") or "") for c in charts)
    assert 'href="/admin/retention"' in response.text  # the admin navigation links here
    assert "verified" in response.text
    assert "purge-" in response.text


def test_plan_chart_segments() -> None:
    entry = CategoryPlan(
        category="posts",
        unit="posts",
        rule={"action": "delete"},
        rule_text="kept at most 1 year",
        stores=("lake.posts",),
        total=1_000_003,
        keep=1_000_000,
        done=0,
        delete=3,
        anonymise=0,
        held=0,
        unknown_owner=0,
        by_trigger={},
        held_by={},
        explanation=(),
    )
    chart = plan_chart(entry, width=400)
    assert [s["label"] for s in chart["segments"]] == ["kept", "to delete or anonymise"]
    assert chart["segments"][1]["width"] == 2  # a handful among a million still shows
    assert sum(s["width"] for s in chart["segments"]) == 400
    empty = plan_chart(replace(entry, total=0, keep=0, delete=0, rule=None))
    assert empty["segments"] == []
    assert empty["gap"] is True
