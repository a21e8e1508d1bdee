"""A walk over every page in the system Chromium, at a phone's width and a laptop's.

A small demo home with something on every page (licensees, a delivery, an opt-out and its
revocations, a legal hold and a verified purge, a scraping assessment with an evidence pack,
live meter events) is served by a real `consentry serve`. The walk visits every public page
signed out, the user's pages signed in as a demo user, and the admin console signed in with an
admin token, at 390 px and 1280 px, and on every page checks:

1. The page, with every `<details>` opened, does not scroll sideways:
   `document.documentElement.scrollWidth` is at most the viewport's width. A table wider than
   its column scrolls inside its `.table-wrap`, and then a visible "Scroll sideways →" line
   stands above it (the wrap's `::before`).
2. The browser reports no error: no console message of type error (a refused script or style,
   a failed load) and no uncaught exception.
3. Every same-origin link answers 200, or redirects (3xx) to a same-origin page that answers
   200 — signed-out links to the privacy settings go to the sign-in page, deliberately.
4. Every table row is drawn (no stylesheet rule collapses one), and public and user pages
   never show the home's filesystem paths.

Screenshots of every page at both widths are saved to `test-artifacts/walk/` for review (the
test prints where).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import BrowserContext, Page
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger, Evidence
from consentry.policy import Choice, load_policy
from consentry.revocation import recipients_of
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store
from tests.services import serving
from tests.web.test_browser import ARTIFACTS, _chromium

pytestmark = pytest.mark.browser

WIDTHS = (390, 1280)
SHOTS = ARTIFACTS / "walk"
THIRD = "ai_training_third_party"
LICENSEE = "alpha"
EVIDENCE = "/admin/scraping/evidence/scraper-alpha/report.html"

PUBLIC = (
    "/",
    "/transparency",
    "/policy",
    "/policy/changes/2023-09-29/2024-11-15",
    "/signin",
    "/admin/signin",
    "/docs",
)
USER = ("/settings/privacy", "/settings/privacy/recipients")
ADMIN = (
    "/admin/deliveries",
    "/admin/revocations",
    f"/admin/revocations/{LICENSEE}",
    "/admin/retention",
    "/admin/scraping",
    "/admin/meter",
    EVIDENCE,
)


@dataclass
class Walk:
    url: str
    home: Path
    user: str
    admin_token: str


@dataclass
class Findings:
    """Everything wrong, gathered over the whole walk and reported at once."""

    problems: list[str] = field(default_factory=list)
    checked_links: dict[tuple[str, str], str] = field(default_factory=dict)


def _consentry(home: Path, *args: str) -> None:
    done = CliRunner().invoke(app, ["--home", str(home), *args])
    assert done.exit_code == 0, f"consentry {' '.join(args)} failed:\n{done.output}"


def _author_with_a_delivered_post(settings: Settings) -> str:
    """The busiest author among those whose posts went to LICENSEE."""
    posts = pq.read_table(settings.home / "demo" / "posts.parquet", columns=["author_id"])
    counts = pc.value_counts(posts.column("author_id")).to_pylist()
    authors = [c["values"] for c in sorted(counts, key=lambda c: -c["counts"])]
    policy = load_policy(settings.policy_file)
    with open_store(settings.resolved_database_url) as store:
        for author in authors[:40]:
            if recipients_of(settings, store, policy, author):
                return str(author)
    raise AssertionError(f"no author among the busiest 40 had a post delivered to {LICENSEE}")


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walk]:
    home = tmp_path_factory.mktemp("walk") / "home"
    settings = Settings(home=home)
    _consentry(home, "init")
    _consentry(home, "demo", "generate", "--users", "300", "--posts", "2000",
               "--access-events", "2000")  # fmt: skip
    _consentry(home, "licensee", "add", LICENSEE, "--purpose", THIRD)
    _consentry(home, "licensee", "add", "eu-lab", "--purpose", THIRD, "--regions", "EU",
               "--languages", "de,fr")  # fmt: skip
    _consentry(home, "deliver", LICENSEE, "--as-of", "2025-06-01")
    user = _author_with_a_delivered_post(settings)
    # The user opts out after the delivery: the revocation job asks the licensee to delete.
    ledger = ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_home(home),
    )
    try:
        ledger.record(
            user,
            THIRD,
            Choice.DENY,
            source="settings",
            evidence=Evidence(origin="POST /settings/privacy", client="browser"),
        )
    finally:
        ledger.store.close()
    _consentry(home, "revocations", LICENSEE)
    _consentry(home, "hold", "add", "--matter", "Case 2025-17", "--reason", "Litigation hold",
               "--user", user)  # fmt: skip
    plan = home / "plan.json"
    _consentry(home, "retention", "plan", "--out", str(plan))
    _consentry(home, "retention", "apply", str(plan))
    _consentry(home, "scraping", "assess")
    _consentry(home, "scraping", "evidence", "scraper-alpha")
    token = issue_token(Keyring.for_home(home).platform_secret, "ops", "admin")
    with serving(home) as url:
        _meter_events(url, token)
        yield Walk(url, home, user, token)


def _meter_events(url: str, token: str) -> None:
    """One credential past the threshold (alerts at 50, 80 and 100 %), one well under it."""
    events = [
        {"request_id": f"w{i}", "ts": f"2025-03-05T00:{i:02d}:00Z", "credential": "ak_walk_busy",
         "posts": 300_000}
        for i in range(4)
    ] + [
        {"request_id": "q0", "ts": "2025-03-05T00:10:00Z", "credential": "ak_walk_quiet",
         "posts": 1_200}
    ]  # fmt: skip
    response = httpx.post(
        f"{url}/v1/meter/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-") or "home"


def _listen(page: Page) -> list[str]:
    errors: list[str] = []
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    return errors


def _visit(
    walk: Walk, page: Page, errors: list[str], path: str, width: int, found: Findings
) -> None:
    errors.clear()
    response = page.goto(walk.url + path)
    where = f"{path} at {width} px"
    if response is None or response.status != 200:
        found.problems.append(f"{where}: answered {response.status if response else 'nothing'}")
        return
    page.wait_for_load_state("load")
    if path == "/docs":  # Swagger UI draws the operations after loading the schema
        page.locator(".swagger-ui .opblock-summary-path").first.wait_for()
    if path == "/admin/meter":
        page.locator("#meter-chart li").first.wait_for()
        page.locator("#meter-alerts tr").first.wait_for()
    page.screenshot(path=str(SHOTS / f"{width}-{_slug(path)}.png"), full_page=True)
    # What is folded away must fit too: open every <details>, and let a frame be drawn.
    page.evaluate(
        """() => {
            document.querySelectorAll('details').forEach(d => { d.open = true; });
            return new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)));
        }"""
    )
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    if scroll_width > width:
        found.problems.append(f"{where}: the page scrolls sideways ({scroll_width} px wide)")
    unhinted = page.evaluate(
        """() => [...document.querySelectorAll('.table-wrap')]
            .filter(w => w.scrollWidth > w.clientWidth + 1)
            .filter(w => { const hint = getComputedStyle(w, '::before');
                           return !(hint.content.includes('Scroll sideways')
                                    && parseFloat(hint.height) > 0
                                    && hint.visibility === 'visible'
                                    && parseFloat(hint.opacity) > 0); })
            .map(w => (w.querySelector('table') || w).outerHTML.slice(0, 80))"""
    )
    for table in unhinted:
        found.problems.append(f"{where}: a table scrolls sideways with no visible hint: {table}")
    clipped = page.evaluate(
        """() => [...document.querySelectorAll('main tbody tr')].filter(r => !r.offsetHeight).length
               + [...document.querySelectorAll('.table-wrap')]
                   .filter(w => w.scrollHeight > w.clientHeight + 1).length"""
    )
    if clipped:
        found.problems.append(f"{where}: {clipped} tables or rows are cut off or not drawn")
    found.problems.extend(f"{where}: {e}" for e in errors)


def _check_links(
    walk: Walk, page: Page, context: BrowserContext, session: str, found: Findings
) -> None:
    """Every same-origin link of the page answers 200, or redirects to a page that does."""
    hrefs: list[str] = page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)")
    for href in hrefs:
        url = href.split("#", 1)[0]
        if not url.startswith(walk.url + "/") and url != walk.url:
            continue
        if (session, url) in found.checked_links:
            continue
        response = context.request.get(url, max_redirects=0)
        verdict = str(response.status)
        if 300 <= response.status < 400:
            target = urljoin(url, response.headers.get("location", ""))
            followed = context.request.get(target, max_redirects=0)
            verdict = f"{response.status} -> {urlsplit(target).path} {followed.status}"
            if not target.startswith(walk.url + "/") or followed.status != 200:
                found.problems.append(f"link {url} ({session}, on {page.url}): {verdict}")
        elif response.status != 200:
            found.problems.append(f"link {url} ({session}, on {page.url}): {verdict}")
        found.checked_links[(session, url)] = verdict


def _no_paths(walk: Walk, page: Page, path: str, found: Findings) -> None:
    if str(walk.home) in page.content():
        found.problems.append(f"{path}: shows the home's path {walk.home}")


def _sign_in_user(walk: Walk, page: Page, context: BrowserContext) -> None:
    page.goto(f"{walk.url}/signin")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    assert csrf
    response = context.request.post(
        f"{walk.url}/signin", form={"user_id": walk.user, "csrf": csrf}, max_redirects=0
    )
    assert response.status == 303, response.text()


def _sign_in_admin(walk: Walk, page: Page) -> None:
    page.goto(f"{walk.url}/admin/signin")
    page.get_by_label("Admin token").fill(walk.admin_token)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    assert page.url == f"{walk.url}/admin/deliveries"


def test_every_page_fits_both_widths_with_no_errors_and_no_broken_link(
    walk: Walk, capsys: pytest.CaptureFixture[str]
) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    found = Findings()
    with _chromium() as browser:
        for width in WIDTHS:
            context = browser.new_context(viewport={"width": width, "height": 900})
            page = context.new_page()
            errors = _listen(page)
            for path in PUBLIC:
                _visit(walk, page, errors, path, width, found)
                _check_links(walk, page, context, "signed out", found)
                _no_paths(walk, page, path, found)
            page.goto(f"{walk.url}/")
            footer = page.locator("footer a", has_text="Admin sign-in")
            assert footer.get_attribute("href") == "/admin/signin"

            _sign_in_user(walk, page, context)
            for path in USER:
                _visit(walk, page, errors, path, width, found)
                _check_links(walk, page, context, "user", found)
                _no_paths(walk, page, path, found)
            page.goto(f"{walk.url}/settings/privacy")
            assert page.locator("#history tbody tr").count() >= 1, (
                "the settings page has no history"
            )
            page.goto(f"{walk.url}/settings/privacy/recipients")
            pending = page.locator(f"[data-pending={LICENSEE}]").inner_text()
            assert re.match(r"[1-9][\d,]* pending", pending), pending

            _sign_in_admin(walk, page)
            for path in ADMIN:
                _visit(walk, page, errors, path, width, found)
                _check_links(walk, page, context, "admin", found)
            context.close()
    with capsys.disabled():
        print(
            f"\nwalk: {len(list(SHOTS.glob('*.png')))} screenshots in {SHOTS}; "
            f"{len(found.checked_links)} links checked"
        )
    assert found.problems == [], "\n".join(found.problems)
    # The walk did reach into the console: its links were followed with the admin session.
    assert any(s == "admin" and "/admin/scraping/evidence/" in u for s, u in found.checked_links)
