"""The admin console: admin-token sign-in with CSRF, licensees, deliveries and their charts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.delivery.eligibility import REASON_ORDER
from consentry.delivery.licensees import registry_for
from consentry.delivery.service import list_deliveries
from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.web.admin import exclusion_bars
from tests.delivery.conftest import AS_OF, make_lake_home
from tests.web.html import Element, accessible_name, parse_html

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def console_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A home with licensees `open`, `eu` and a disabled `gone`, and two deliveries."""
    home = make_lake_home(Settings(home=tmp_path_factory.mktemp("console")))
    home.add_licensee("gone")
    registry = registry_for(home.settings)
    try:
        registry.disable("gone")
    finally:
        registry.store.close()
    home.deliver("open")
    home.deliver("eu", as_of=AS_OF + timedelta(days=1))
    return home.settings


def client_for(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


def token(settings: Settings, subject: str, role: str, **kwargs: Any) -> str:
    secret = Keyring.for_home(settings.home).platform_secret
    return issue_token(secret, subject, role, **kwargs)  # type: ignore[arg-type]


def csrf(client: TestClient) -> str:
    found = _CSRF.search(client.get("/admin/signin").text)
    assert found, "the admin sign-in page carries no CSRF token"
    return found.group(1)


def sign_in(client: TestClient, settings: Settings, name: str = "ops") -> None:
    response = client.post(
        "/admin/signin",
        data={"token": token(settings, name, "admin"), "csrf": csrf(client)},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin/deliveries"


def page(client: TestClient) -> Element:
    response = client.get("/admin/deliveries", follow_redirects=False)
    assert response.status_code == 200, response.text
    return parse_html(response.text)


def assert_still_signed_out(client: TestClient) -> None:
    response = client.get("/admin/deliveries", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/signin"


# -- sign-in -----------------------------------------------------------------------------------


def test_deliveries_redirect_to_signin_without_a_session(console_home: Settings) -> None:
    assert_still_signed_out(client_for(console_home))


def test_signin_page_has_a_named_token_field_and_a_csrf_token(console_home: Settings) -> None:
    response = client_for(console_home).get("/admin/signin")
    assert response.status_code == 200
    doc = parse_html(response.text)
    form = doc.find("form", action="/admin/signin", method="post")
    field = form.find("input", name="token")
    assert field.attrs["type"] == "password"
    assert accessible_name(doc, field) == "Admin token"
    assert form.find("input", name="csrf", type="hidden").attrs["value"]
    assert accessible_name(doc, form.find("button")) == "Sign in"


def test_an_admin_token_signs_in(console_home: Settings) -> None:
    client = client_for(console_home)
    sign_in(client, console_home, "ops-alice")
    doc = page(client)
    assert "Signed in as admin ops-alice" in doc.text()


def test_a_user_token_is_refused_with_403(console_home: Settings) -> None:
    client = client_for(console_home)
    response = client.post(
        "/admin/signin",
        data={"token": token(console_home, "u-us", "user"), "csrf": csrf(client)},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert "Not an admin token" in parse_html(response.text).text()
    assert_still_signed_out(client)


@pytest.mark.parametrize("form_token", ["", "not-the-sessions-token"])
def test_signin_without_the_sessions_csrf_token_is_refused(
    console_home: Settings, form_token: str
) -> None:
    client = client_for(console_home)
    csrf(client)  # the session has a token; the form does not carry it
    response = client.post(
        "/admin/signin",
        data={"token": token(console_home, "ops", "admin"), "csrf": form_token},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert_still_signed_out(client)


def test_a_csrf_token_from_another_session_is_refused(console_home: Settings) -> None:
    other = csrf(client_for(console_home))
    client = client_for(console_home)
    csrf(client)
    response = client.post(
        "/admin/signin",
        data={"token": token(console_home, "ops", "admin"), "csrf": other},
        follow_redirects=False,
    )
    assert response.status_code == 403
    assert_still_signed_out(client)


@pytest.mark.parametrize("kind", ["garbage", "expired", "other secret"])
def test_an_invalid_admin_token_is_refused_with_401(console_home: Settings, kind: str) -> None:
    if kind == "garbage":
        value = "not.a.token"
    elif kind == "expired":
        value = token(
            console_home,
            "ops",
            "admin",
            lifetime=timedelta(hours=1),
            now=datetime.now(UTC) - timedelta(days=1),
        )
    else:
        value = issue_token(b"x" * 32, "ops", "admin")
    client = client_for(console_home)
    response = client.post(
        "/admin/signin", data={"token": value, "csrf": csrf(client)}, follow_redirects=False
    )
    assert response.status_code == 401
    assert_still_signed_out(client)


# -- the page ----------------------------------------------------------------------------------


def _licensee_rows(doc: Element) -> dict[str, list[str]]:
    table = doc.find("table")
    rows = [
        [cell.text() for cell in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")
    ]
    return {row[0]: row for row in rows}


def test_the_page_lists_every_licensee_with_its_terms(console_home: Settings) -> None:
    client = client_for(console_home)
    sign_in(client, console_home)
    rows = _licensee_rows(page(client))
    assert set(rows) == {"open", "eu", "gone"}
    _, purpose, regions, languages, period, state = rows["eu"]
    assert purpose == "ai_training_third_party"
    assert regions == "EU"
    assert languages == "de, fr"
    assert period.startswith("2024-06-01T00:00:00Z")
    assert state == "active"
    assert rows["open"][2] == "everywhere"
    assert rows["open"][3] == "all"
    assert rows["gone"][5].startswith("disabled ")


def _bars(chart: Element) -> list[tuple[str, int, int]]:
    """(label, width, value) per bar of an exclusion chart: a list of rows, each its label, an
    SVG bar (a track, then the bar) and its value, so labels and values never overlap bars."""
    rows = []
    for li in chart.find_all("li"):
        label = li.find("span", class_="bar-label").text()
        track, bar = li.find("svg").find_all("rect")
        assert track.attrs["width"] == "360"  # the chart's scale
        value = int(li.find("span", class_="bar-value").text().replace(",", ""))
        rows.append((label, int(bar.attrs["width"]), value))
    return rows


def test_each_delivery_shows_its_manifest_and_exclusion_chart(console_home: Settings) -> None:
    client = client_for(console_home)
    sign_in(client, console_home)
    doc = page(client)
    manifests = list_deliveries(console_home)
    assert len(manifests) == 2
    sections = doc.find_all("section")
    # Newest first, one section per delivery.
    assert [s.find("h3").text() for s in sections] == [m["delivery_id"] for m in manifests]
    for section, manifest in zip(sections, manifests, strict=True):
        text = section.text()
        counts = manifest["counts"]
        for fact in (
            manifest["licensee"],
            manifest["purpose"],
            f"policy {manifest['policy_version']}",
            f"as of {manifest['as_of']}",
            f"engine {manifest['engine']}",
            f"{counts['delivered']:,} of {counts['considered']:,} posts delivered",
            manifest["lineage_sha256"],
            manifest["signing_key"],
        ):
            assert fact in text, (fact, text)
        for entry in manifest["files"]:
            assert entry["name"] in text
            assert entry["sha256"][:16] in text
        chart = section.find("ul", class_="bars")
        assert chart.attrs["aria-label"]
        bars = _bars(chart)
        nonzero = [(r.value, counts["excluded"][r.value]) for r in REASON_ORDER]
        assert [(label, value) for label, _, value in bars] == [
            ("delivered", counts["delivered"])
        ] + [(reason, n) for reason, n in nonzero if n]
        # Bars are scaled to the largest, which spans the full width.
        top = max(value for _, _, value in bars)
        for _, width, value in bars:
            assert width == (max(1, round(360 * value / top)) if value else 0)


def test_an_admin_session_is_not_a_user_session(console_home: Settings) -> None:
    client = client_for(console_home)
    sign_in(client, console_home)
    response = client.get("/settings/privacy", follow_redirects=False)
    assert response.status_code in (303, 307)
    assert "/signin" in response.headers["location"]


def test_a_home_without_licensees_or_deliveries_says_so(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "empty")
    init_home(settings)
    client = client_for(settings)
    sign_in(client, settings)
    text = page(client).text()
    assert "No licensees yet" in text
    assert "No deliveries yet" in text


def test_exclusion_bars_scale_to_the_largest_and_skip_zeros() -> None:
    # Given in sorted-key order, as manifest.json stores them: shown in the checks' order.
    excluded = {r.value: 0 for r in REASON_ORDER} | {"not_public": 120, "consent_denied": 1}
    counts = {"delivered": 30, "excluded": dict(sorted(excluded.items()))}
    assert exclusion_bars(counts) == [
        {"label": "delivered", "value": 30, "width": 90, "tone": "ok"},
        {"label": "not_public", "value": 120, "width": 360, "tone": "bad"},
        {"label": "consent_denied", "value": 1, "width": 3, "tone": "bad"},
    ]
    empty = {"delivered": 0, "excluded": {r.value: 0 for r in REASON_ORDER}}
    assert exclusion_bars(empty) == [{"label": "delivered", "value": 0, "width": 0, "tone": "ok"}]
