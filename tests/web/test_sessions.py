"""Sessions end server-side (sign-out, an admin token's expiry) and forms must come from this
site."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.store import open_store
from consentry.store.models import WebSessionRow
from tests.web.conftest import Site

THIRD = "ai_training_third_party"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def _copy(site: Site) -> TestClient:
    """Another client (another machine) holding a copy of the site client's cookie."""
    thief = TestClient(create_app(site.settings))
    thief.cookies.set("consentry_session", site.client.cookies["consentry_session"])
    return thief


def _admin_token(site: Site, lifetime: timedelta = timedelta(days=1)) -> str:
    secret = Keyring.for_home(site.settings.home).platform_secret
    return issue_token(secret, "ops", "admin", lifetime=lifetime)


def _admin_sign_in(client: TestClient, token: str) -> None:
    found = _CSRF.search(client.get("/admin/signin").text)
    assert found
    response = client.post(
        "/admin/signin", data={"token": token, "csrf": found.group(1)}, follow_redirects=False
    )
    assert response.status_code == 303, response.text


def _admin_page(client: TestClient) -> int:
    status: int = client.get("/admin/deliveries", follow_redirects=False).status_code
    return status


def _sessions(site: Site) -> list[WebSessionRow]:
    with open_store(site.settings.resolved_database_url) as store, store.session() as session:
        return list(session.scalars(sa.select(WebSessionRow)))


# -- sign-out ends a session server-side ---------------------------------------------------


def test_a_copied_cookie_stops_working_after_sign_out(site: Site) -> None:
    site.sign_in("alice")
    thief = _copy(site)
    assert thief.get("/settings/privacy", follow_redirects=False).status_code == 200
    response = site.client.post("/signout", data={"csrf": site.csrf()}, follow_redirects=False)
    assert response.headers["location"] == "/signin"
    page = thief.get("/settings/privacy", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/signin"
    assert thief.post(
        f"/settings/privacy/{THIRD}",
        data={"choice": "deny", "csrf": "x"},
        follow_redirects=False,
    ).status_code in (401, 403)
    assert site.history("alice") == []
    [row] = _sessions(site)
    assert (row.subject, row.role) == ("alice", "user")
    assert row.ended_at is not None


def test_a_copied_admin_cookie_stops_working_after_sign_out(site: Site) -> None:
    _admin_sign_in(site.client, _admin_token(site))
    thief = _copy(site)
    assert _admin_page(thief) == 200
    found = _CSRF.search(site.client.get("/admin/deliveries").text)
    assert found, "the admin menu carries a sign-out form with the session's token"
    response = site.client.post(
        "/signout", data={"csrf": found.group(1), "then": "admin"}, follow_redirects=False
    )
    assert response.headers["location"] == "/admin/signin"
    assert _admin_page(thief) == 303
    assert _admin_page(site.client) == 303


def test_the_store_keeps_only_a_digest_of_the_cookie_token(site: Site) -> None:
    site.sign_in("alice")
    [row] = _sessions(site)
    assert re.fullmatch(r"[0-9a-f]{64}", row.id)
    assert row.id not in site.client.cookies["consentry_session"]
    assert row.expires_at - row.created_at == timedelta(days=14)


# -- an admin session ends with its token ----------------------------------------------------


def test_an_admin_session_ends_when_its_token_expires(site: Site) -> None:
    _admin_sign_in(site.client, _admin_token(site, lifetime=timedelta(seconds=2)))
    assert _admin_page(site.client) == 200
    [row] = _sessions(site)
    assert row.expires_at <= datetime.now(UTC) + timedelta(seconds=2)
    time.sleep(2.2)
    assert _admin_page(site.client) == 303


def test_a_long_lived_admin_token_still_gives_at_most_a_fourteen_day_session(site: Site) -> None:
    _admin_sign_in(site.client, _admin_token(site, lifetime=timedelta(days=300)))
    [row] = _sessions(site)
    assert row.expires_at - row.created_at == timedelta(days=14)


# -- CSRF checks where the form comes from ---------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "https://evil.example/page"},
    ],
)
def test_a_form_from_another_site_is_refused_even_with_the_token(
    site: Site, headers: dict[str, str]
) -> None:
    site.sign_in("alice")
    token = site.csrf()
    response = site.client.post(
        f"/settings/privacy/{THIRD}",
        data={"choice": "deny", "csrf": token},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert site.history("alice") == []
    response = site.client.post(
        "/signin", data={"user_id": "berta", "csrf": token}, headers=headers
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://testserver"}, {"Referer": "http://testserver/settings/privacy"}, {}],
)
def test_a_form_from_this_site_is_accepted(site: Site, headers: dict[str, str]) -> None:
    site.sign_in("alice")
    response = site.client.post(
        f"/settings/privacy/{THIRD}",
        data={"choice": "deny", "csrf": site.csrf()},
        headers=headers,
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert len(site.history("alice")) == 1
