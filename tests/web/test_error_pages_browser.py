"""Error pages in a real browser against a real `consentry serve`: what Chromium sends as its
`Accept` is what decides, so this is checked with Chromium itself (the system one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import sync_playwright

from consentry.cli.admin import init_home
from consentry.scraping.evidence import HEADLESS_CHROMIUM_ARGS
from consentry.settings import Settings
from consentry.web import STATIC_DIR
from tests.services import serving

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("error-pages") / "home"
    init_home(Settings(home=home))
    with serving(home) as served:
        yield served


@pytest.mark.parametrize("path", ["/no-such-page", "/v1/no-such-thing"])
def test_chromium_gets_a_page_for_an_unknown_url_and_finds_its_way_home(
    url: str, path: str
) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=list(HEADLESS_CHROMIUM_ARGS)
        )
        try:
            page = browser.new_page()
            response = page.goto(url + path)
            assert response is not None
            assert response.status == 404
            assert response.headers["content-type"].startswith("text/html")
            assert page.title() == "Page not found — Consentry"
            assert page.get_by_role("alert").inner_text().startswith(f"There is no page at {path}.")
            with page.expect_navigation():
                page.get_by_role("link", name="Go to the home page").click()
            assert page.url == url + "/"
            icon = page.request.get(url + "/favicon.ico")
            assert icon.status == 200
            assert icon.headers["content-type"] == "image/svg+xml"
            assert icon.body() == (STATIC_DIR / "favicon.svg").read_bytes()
        finally:
            browser.close()
