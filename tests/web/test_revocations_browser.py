"""The recipients page in a real browser against a real `consentry serve`: opt out, run the
revocation job, see "pending"; the licensee posts receipts through the API, see "confirmed".

Drives the system Chromium (/usr/bin/chromium) through Playwright, as tests/web/test_browser.py
does; screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from consentry.delivery.licensees import registry_for
from consentry.settings import Settings
from tests.delivery.conftest import AS_OF, THIRD, make_lake_home
from tests.services import serving
from tests.web.test_browser import _chromium, _cli, _shot

pytestmark = pytest.mark.browser

USER = "u-jp"
"""Listed on the demo sign-in page; unknown age in JP: third-party training on by default;
their post p12 goes to the licensee."""


@dataclass
class Served:
    url: str
    home: Path
    api_key: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("recipients-browser") / "home"
    home.mkdir()
    lake_home = make_lake_home(Settings(home=home))
    registry = registry_for(lake_home.settings)
    try:
        api_key = registry.add("alpha", THIRD).api_key
    finally:
        registry.store.close()
    lake_home.deliver("alpha", as_of=AS_OF)
    marker = home / "demo" / "demo.json"  # demo sign-in for the world's users
    marker.parent.mkdir()
    marker.write_text(json.dumps({"users": 11, "seed": 1}))
    with serving(home) as url:
        yield Served(url, home, api_key)


def _cells(page: Page) -> tuple[str, str]:
    return (
        page.locator("[data-pending=alpha]").inner_text(),
        page.locator("[data-confirmed=alpha]").inner_text(),
    )


def test_opt_out_then_pending_then_confirmed(served: Served) -> None:
    with _chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        page.goto(f"{served.url}/signin")
        page.locator(f"input[type=radio][value='{USER}']").check()
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        assert page.url == f"{served.url}/settings/privacy"

        page.get_by_role("link", name="Who received your posts").click()
        page.wait_for_url(f"{served.url}/settings/privacy/recipients")
        assert _cells(page) == ("0 pending", "0 confirmed")
        _shot(page, "recipients-01-before")

        page.goto(f"{served.url}/settings/privacy")
        assert page.locator(f"[data-state={THIRD}]").inner_text() == "On"
        with page.expect_navigation():
            page.locator(f"#purpose-{THIRD} button").click()
        assert page.locator(f"[data-state={THIRD}]").inner_text() == "Off"

        _cli(served.home, "revocations", "alpha")
        page.goto(f"{served.url}/settings/privacy/recipients")
        assert _cells(page) == ("1 pending", "0 confirmed")
        _shot(page, "recipients-02-pending")

        auth = {"Authorization": f"Bearer {served.api_key}"}
        feed = httpx.get(f"{served.url}/v1/licensee/revocations", headers=auth).json()
        ids = [r["record_id"] for r in feed["revocations"]]
        posted = httpx.post(
            f"{served.url}/v1/licensee/revocations/receipts", json={"record_ids": ids}, headers=auth
        )
        assert posted.status_code == 200, posted.text
        page.reload()
        assert _cells(page) == ("0 pending", "1 confirmed")
        _shot(page, "recipients-03-confirmed")
        context.close()
