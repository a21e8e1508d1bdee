"""The privacy settings page in a real browser against a real `consentry serve`.

Drives the system Chromium (/usr/bin/chromium) through Playwright's sync API: Playwright's
own browser download is not available here, and a missing Chromium is a failure, never a
skip. Screenshots of every step go to `test-artifacts/` at the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.ledger.rules import ConsentRule
from consentry.ledger.service import ConsentLedger
from consentry.policy import REGION_GROUPS, Choice, load_policy
from consentry.scraping.evidence import HEADLESS_CHROMIUM_ARGS
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store
from tests.services import serving

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = list(HEADLESS_CHROMIUM_ARGS)
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
THIRD = "ai_training_third_party"
EUROPE = REGION_GROUPS["EU"] | REGION_GROUPS["EEA"] | REGION_GROUPS["UK"]


@dataclass
class Served:
    url: str
    home: Path
    ledger: ConsentLedger


def _cli(home: Path, *args: str, timeout: float = 120) -> None:
    env = {**os.environ, "CONSENTRY_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"consentry {' '.join(args)} failed:\n{done.stdout}{done.stderr}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A small real demo platform (`consentry demo generate`) served by `consentry serve`."""
    home = tmp_path_factory.mktemp("browser") / "home"
    _cli(home, "init")
    _cli(home, "demo", "generate", "--users", "300", "--posts", "2000", "--access-events", "2000")
    settings = Settings(home=home)
    ledger = ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_home(home),
    )
    # `demo generate` loads the lake and brings the ledger up to date with it.
    lake = Lake.of(settings)
    assert ledger.subject(lake.read_arrow("users").column("user_id")[0].as_py()) is not None

    try:
        with serving(home) as url:
            yield Served(url, home, ledger)
    finally:
        ledger.store.close()


@contextmanager
def _chromium() -> Iterator[Browser]:
    """The system Chromium under Playwright; a missing binary fails the test (never a skip)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"the browser tests need the system Chromium at {CHROMIUM} "
            "(Debian package `chromium`: apt-get install chromium)",
            pytrace=False,
        )
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def _listed_users(page: Page) -> list[str]:
    radios = page.locator("input[type=radio][name=user_id]")
    return [radios.nth(i).get_attribute("value") or "" for i in range(radios.count())]


def _pick(served: Served, candidates: list[str], *, outside_europe: bool) -> str:
    """An adult from the sign-in list with no consent history (so defaults decide)."""
    now = datetime.now(UTC)
    for user_id in candidates:
        subject = served.ledger.subject(user_id)
        if subject is None or subject.birth_date is None or served.ledger.history(user_id):
            continue
        if outside_europe and (subject.region or "").upper() in EUROPE:
            continue
        decision = served.ledger.resolve(user_id, THIRD, now)
        if decision.rule is ConsentRule.MINOR:
            continue
        if outside_europe and not (
            decision.decision is Choice.ALLOW and decision.rule is ConsentRule.DEFAULT
        ):
            continue
        return user_id
    raise AssertionError(f"no suitable demo user among {candidates}")


def _sign_in(page: Page, served: Served, user_id: str) -> None:
    page.goto(f"{served.url}/signin")
    page.locator(f"input[type=radio][value='{user_id}']").check()
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url == f"{served.url}/settings/privacy"


def test_switch_off_with_the_keyboard_then_gpc(served: Served) -> None:
    with _chromium() as browser:
        _keyboard_then_gpc(served, browser)


def _keyboard_then_gpc(served: Served, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{served.url}/signin")
    users = _listed_users(page)
    assert len(users) >= 2, "the sign-in page lists too few demo users"
    _shot(page, "01-signin")
    alice = _pick(served, users, outside_europe=True)

    _sign_in(page, served, alice)
    state = page.locator(f"[data-state={THIRD}]")
    assert state.inner_text() == "On"
    assert page.locator(f"[data-reason={THIRD}]").inner_text() == (
        "On by default since policy 2024-11-15 — switch it off here."
    )
    _shot(page, "02-privacy-before")

    # Keyboard only: Tab from the top of the page to the switch (named for its purpose),
    # then Enter.
    switch = page.get_by_role("button", name="Switch off Third-party AI training")
    assert switch.count() == 1
    page.locator("body").focus()
    for _ in range(30):
        page.keyboard.press("Tab")
        if switch.evaluate("button => button === document.activeElement"):
            break
    else:
        raise AssertionError("Tab never reached the switch for third-party AI training")
    _shot(page, "02b-switch-focused")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.url.endswith(f"/settings/privacy#purpose-{THIRD}")
    assert page.get_by_role("status").first.inner_text() == (
        "Saved: Third-party AI training is now off, from now on."
    )
    _shot(page, "03-switched-off")

    page.reload()
    assert page.locator(f"[data-state={THIRD}]").inner_text() == "Off"
    assert (
        page.locator(f"[data-reason={THIRD}]")
        .inner_text()
        .startswith("Off: you switched it off on ")
    )
    rows = page.locator("#history tbody tr")
    assert rows.count() == 1
    cells = rows.first.locator("td").all_inner_texts()
    assert cells[1:] == ["Third-party AI training", "Off", "this page", "2024-11-15"]
    assert page.get_by_role("button", name="Switch on Third-party AI training").is_visible()
    _shot(page, "04-after-reload")
    [event] = served.ledger.history(alice)
    assert (event.purpose, event.choice, event.source) == (THIRD, Choice.DENY, "settings")
    context.close()

    # A browser that sends Global Privacy Control on every request.
    gpc = browser.new_context(
        viewport={"width": 1100, "height": 900}, extra_http_headers={"Sec-GPC": "1"}
    )
    page = gpc.new_page()
    emil = _pick(served, [u for u in users if u != alice], outside_europe=False)
    _sign_in(page, served, emil)
    notice = page.locator("#gpc-notice")
    assert notice.is_visible()
    assert "Your browser sent a Global Privacy Control signal." in notice.inner_text()
    assert "Third-party AI training" in notice.inner_text()
    assert page.locator(f"[data-state={THIRD}]").inner_text() == "Off"
    assert (
        page.locator(f"[data-reason={THIRD}]")
        .inner_text()
        .startswith("Off: your browser's Global Privacy Control signal asked us not to share")
    )
    how = page.locator("#history tbody tr td:nth-child(4)").all_inner_texts()
    assert how
    assert set(how) == {"Global Privacy Control"}
    _shot(page, "05-gpc")
    recorded = served.ledger.history(emil)
    assert recorded
    assert {(e.choice, e.source) for e in recorded} == {(Choice.DENY, "gpc")}

    page.get_by_role("link", name="What changed from 2023-09-29").click()
    page.wait_for_url(f"{served.url}/policy/changes/2023-09-29/2024-11-15")
    assert page.locator("main li").count() >= 3
    _shot(page, "06-policy-changes")
    gpc.close()


def _csp_violations(page: Page) -> list[str]:
    """Console messages in which the browser refused something under the page's policy."""
    found: list[str] = []
    page.on(
        "console",
        lambda message: (
            found.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return found


def test_every_page_works_under_the_content_security_policy(served: Served) -> None:
    """Swagger UI, the privacy page, the admin console and its live meter (a script of ours)
    work with no refusal by the policy; signing out from a page ends the session."""
    token = issue_token(Keyring.for_home(served.home).platform_secret, "ops", "admin")
    with _chromium() as browser:
        context = browser.new_context(viewport={"width": 1100, "height": 900})
        page = context.new_page()
        refused = _csp_violations(page)

        response = page.goto(f"{served.url}/docs")
        assert response is not None
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        # Swagger UI 5's bundle and its starter script ran: it read the OpenAPI 3.1 schema,
        # drew every operation, and its Authorize dialog offers both security schemes.
        page.locator(".swagger-ui .info .title").wait_for()
        operation = page.locator(".opblock-summary-path", has_text="/v1/users/{user_id}/consent")
        operation.first.wait_for()
        page.get_by_role("button", name="Authorize").first.click()
        dialog = page.locator(".dialog-ux")
        dialog.locator("text=token").first.wait_for()
        dialog.locator("text=apiKey").first.wait_for()
        assert dialog.locator("input").count() == 2
        _shot(page, "07-docs-under-csp")

        page.goto(f"{served.url}/signin")
        _sign_in(page, served, _listed_users(page)[0])
        with page.expect_navigation():
            page.get_by_role("button", name="Sign out").click()
        assert page.url == f"{served.url}/signin"
        page.goto(f"{served.url}/settings/privacy")
        assert page.url == f"{served.url}/signin"

        page.goto(f"{served.url}/admin/signin")
        page.get_by_label("Admin token").fill(token)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        assert page.url == f"{served.url}/admin/deliveries"
        page.goto(f"{served.url}/admin/meter")
        page.locator("#meter-status", has_text="events metered").wait_for()
        _shot(page, "08-meter-under-csp")
        with page.expect_navigation():
            page.get_by_role("button", name="Sign out").click()
        assert page.url == f"{served.url}/admin/signin"
        page.goto(f"{served.url}/admin/meter")
        assert page.url == f"{served.url}/admin/signin"
        context.close()
    assert refused == []
