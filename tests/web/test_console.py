"""The console's shared parts: instants as people read them, the one navigation, the footer's
way in, the icon browsers ask for. (Layout at 390 and 1280 px: test_walk.py.)"""

from __future__ import annotations

from consentry.cli.admin import init_home
from consentry.settings import Settings
from consentry.web.scraping import minute
from tests.web.conftest import Site
from tests.web.html import parse_html
from tests.web.test_admin import client_for, sign_in


def test_minute_truncates_to_the_minute_in_utc() -> None:
    assert minute("2025-03-04T22:35:25.823487Z") == "2025-03-04 22:35 UTC"
    assert minute("2025-03-05T02:00:00+02:00") == "2025-03-05 00:00 UTC"


def test_every_public_page_leads_to_admin_sign_in(site: Site) -> None:
    for path in ("/", "/signin", "/policy", "/transparency", "/admin/signin"):
        response, doc = site.page(path)
        assert response.status_code == 200, path
        footer = doc.find("footer")
        assert footer.find("a", href="/admin/signin").text() == "Admin sign-in", path


def test_the_home_page_says_how_to_get_an_admin_token(site: Site) -> None:
    _, doc = site.page("/")
    assert "consentry token admin" in doc.text()
    _, signin = site.page("/admin/signin")
    assert "consentry token admin --name" in signin.text()


def test_admin_pages_have_one_navigation_marking_where_you_are(settings: Settings) -> None:
    init_home(settings)
    client = client_for(settings)
    sign_in(client, settings, "ops")
    for path in ("/admin/deliveries", "/admin/revocations", "/admin/retention",
                 "/admin/scraping", "/admin/meter"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 200, path
        doc = parse_html(response.text)
        navs = [n for n in doc.find_all("nav") if n.attrs.get("aria-label") != "Footer"]
        assert [n.attrs["aria-label"] for n in navs] == ["Admin console"], path
        current = [a.attrs["href"] for a in navs[0].find_all("a") if "aria-current" in a.attrs]
        assert current == [path]
        assert "Signed in as admin ops" in navs[0].text()


def test_browsers_asking_for_favicon_ico_get_the_icon(site: Site) -> None:
    response = site.client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.content == site.client.get("/static/favicon.svg").content
