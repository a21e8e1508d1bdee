"""Errors for people: unknown URLs and server errors as pages for browsers (problems for API
clients), the favicon, and bad admin tokens refused in a sentence."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.keys import Keyring
from consentry.serving.auth import AUDIENCE, issue_token
from consentry.serving.problems import prefers_html
from consentry.settings import Settings
from consentry.web import STATIC_DIR
from tests.web.html import parse_html

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
SECRET = "an internal detail that must not reach the caller"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The service for an initialised home, with two routes that fail as a bug would."""
    init_home(settings)
    app = create_app(settings)

    @app.get("/failing-page")
    def failing_page() -> None:
        raise RuntimeError(SECRET)

    @app.get("/v1/failing")
    def failing_api() -> None:
        raise RuntimeError(SECRET)

    return app


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


# -- unknown URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/no-such-page", "/v1/no-such-thing", "/settings/nope/x"])
def test_a_browser_gets_a_page_for_an_unknown_url(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Accept": BROWSER})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    doc = parse_html(response.text)
    assert doc.find("h1").text() == "Page not found"
    assert f"There is no page at {path}." in doc.text()
    assert any(a.attrs.get("href") == "/" for a in doc.find("main").find_all("a"))
    # The reference to quote is the request's id.
    assert response.headers["x-request-id"] in doc.find("main").text()
    assert "{" not in doc.find("main").text()  # no JSON in sight


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", "application/problem+json, text/html;q=0.5"]
)
def test_an_api_client_gets_a_problem_for_an_unknown_url(
    client: TestClient, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    for path in ("/no-such-page", "/v1/no-such-thing"):
        response = client.get(path, headers=headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        body = response.json()
        assert (body["status"], body["title"]) == (404, "Not Found")
        assert body["request_id"] == response.headers["x-request-id"]


def test_a_known_api_route_answers_a_problem_even_to_a_browser(client: TestClient) -> None:
    response = client.get("/v1/users/alice/consent", headers={"Accept": BROWSER})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_a_wrong_method_on_a_page_is_a_page(client: TestClient) -> None:
    response = client.delete("/transparency", headers={"Accept": BROWSER})
    assert response.status_code == 405
    doc = parse_html(response.text)
    assert doc.find("h1").text() == "That cannot be done here"
    assert "does not take a DELETE request" in doc.text()


# -- server errors -----------------------------------------------------------------------------


def test_a_server_error_is_a_page_for_a_browser_without_the_error(client: TestClient) -> None:
    response = client.get("/failing-page", headers={"Accept": BROWSER})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/html")
    doc = parse_html(response.text)
    assert doc.find("h1").text() == "Something went wrong on our side"
    text = doc.text()
    assert "try again in a moment" in text.lower()
    assert response.headers["x-request-id"] in text
    assert SECRET not in response.text
    assert "Traceback" not in response.text
    assert "RuntimeError" not in response.text
    assert any(a.attrs.get("href") == "/" for a in doc.find("main").find_all("a"))


@pytest.mark.parametrize("path", ["/failing-page", "/v1/failing"])
def test_a_server_error_is_a_problem_for_an_api_client(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"Accept": "application/json"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 500
    assert body["request_id"] == response.headers["x-request-id"]
    assert SECRET not in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("application/xhtml+xml", True),
        ("", False),
        ("*/*", False),
        ("text/*", False),
        ("application/json", False),
        ("application/json, text/html", False),  # a tie goes to JSON
        ("text/html;q=0.4, application/problem+json;q=0.5", False),
        ("text/html;q=0.6, application/json;q=0.5", True),
        ("text/html;q=0", False),
        ("TEXT/HTML ; Q=0.9", True),
        ("text/html;q=oops", True),  # an unreadable quality counts as 1
    ],
)
def test_prefers_html(accept: str, html: bool) -> None:
    assert prefers_html(accept) is html


# -- the favicon -------------------------------------------------------------------------------


def test_the_favicon_answers_where_browsers_look(client: TestClient) -> None:
    response = client.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.content == (STATIC_DIR / "favicon.svg").read_bytes()
    links = parse_html(client.get("/").text).find_all("link")
    icons = [link.attrs["href"] for link in links if link.attrs.get("rel") == "icon"]
    assert icons, "the pages link no icon"
    assert all(client.get(href).status_code == 200 for href in icons)


# -- bad admin tokens --------------------------------------------------------------------------

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
# What PyJWT says; a person signing in must never see it.
_LIBRARY = re.compile(
    r"Not enough segments|Invalid header padding|Invalid crypto padding|Signature "
    r"verification failed|Signature has expired|Invalid audience|Invalid payload|"
    r"alg value is not allowed|Token is missing|DecodeError|PyJWT|invalid token:",
    re.IGNORECASE,
)


def _tokens(settings: Settings) -> dict[str, tuple[str, str]]:
    """Bad admin tokens and the reason the page must give for each."""
    secret = Keyring.for_home(settings.home).platform_secret
    now = datetime.now(UTC)
    claims = {
        "iss": "consentry",
        "sub": "ops",
        "role": "admin",
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(days=1)).timestamp()),
    }
    expired = issue_token(
        secret, "ops", "admin", lifetime=timedelta(hours=1), now=datetime(2025, 1, 1, tzinfo=UTC)
    )
    return {
        "garbage": ("not.a.token", "it is not a Consentry token"),
        "one part": ("abc", "it is not a Consentry token"),
        "cut short": (issue_token(secret, "ops", "admin")[:-30], "it is not a Consentry token"),
        "other secret": (issue_token(b"x" * 32, "ops", "admin"), "it was not signed with this"),
        "expired": (expired, "it expired at 2025-01-01 01:00 UTC"),
        "other audience": (
            jwt.encode({**claims, "aud": "elsewhere"}, secret, algorithm="HS256"),
            "it is not meant for the Consentry API",
        ),
        "no exp": (
            jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, "HS256"),
            "it has no exp claim",
        ),
        "alg none": (jwt.encode(claims, "", algorithm="none"), "it is not signed with HS256"),
        "bad role": (
            jwt.encode({**claims, "role": "root"}, secret, algorithm="HS256"),
            "its role must be user or admin",
        ),
    }


def test_a_bad_admin_token_is_refused_in_a_sentence(settings: Settings) -> None:
    init_home(settings)
    for kind, (token, reason) in _tokens(settings).items():
        client = TestClient(create_app(settings))
        found = _CSRF.search(client.get("/admin/signin").text)
        assert found
        response = client.post(
            "/admin/signin", data={"token": token, "csrf": found.group(1)}, follow_redirects=False
        )
        assert response.status_code == 401, kind
        message = parse_html(response.text).find("div", role="alert").text().strip()
        assert message.startswith(f"That admin token is not valid: {reason}"), (kind, message)
        assert message.endswith("."), (kind, message)
        assert not _LIBRARY.search(response.text), (kind, message)


def test_a_user_token_at_admin_sign_in_is_told_what_to_use(settings: Settings) -> None:
    init_home(settings)
    client = TestClient(create_app(settings))
    found = _CSRF.search(client.get("/admin/signin").text)
    assert found
    user = issue_token(Keyring.for_home(settings.home).platform_secret, "alice", "user")
    response = client.post("/admin/signin", data={"token": user, "csrf": found.group(1)})
    assert response.status_code == 403
    message = parse_html(response.text).find("div", role="alert").text()
    assert "user's token" in message
    assert "consentry token admin" in message


def test_a_bad_bearer_token_is_refused_in_a_sentence(settings: Settings) -> None:
    init_home(settings)
    client = TestClient(create_app(settings))
    for kind, (token, reason) in _tokens(settings).items():
        response = client.get("/v1/status", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, kind
        (item,) = response.json()["errors"]
        assert item["field"] == "Authorization"
        assert item["message"].startswith(f"That token is not valid: {reason}"), (kind, item)
        assert not _LIBRARY.search(response.text), (kind, item)
