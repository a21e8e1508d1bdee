"""The documentation's screenshots: `python tools/screenshots.py` writes docs/screenshots/.

1. Build a small demo home in a temporary directory with the ordinary commands (`consentry
   init`, `demo generate`, `licensee add`, `deliver`, `retention plan|apply`, `scraping
   assess`, `scraping evidence scraper-alpha`), and serve it with `consentry serve`.
2. In the system Chromium at 1280 px: sign in as a demo user whose posts were delivered and
   switch third-party AI training off on the settings page (a real choice, in the history);
   run the revocation job; then capture
   - `settings.png`: that user's privacy settings page,
   - `transparency.png`: the public transparency report,
   - `evidence.png`: the first page (A4 proportions) of scraper-alpha's evidence pack report,
     as the admin console serves it.
3. Each image is 1280 px wide, at most MAX_HEIGHT tall, reduced to a 256-colour palette so the
   repository stays small. The home is removed afterwards unless `--keep DIR` names where to
   build it.

Needs the dev install (Playwright) and Chromium at /usr/bin/chromium (`--chromium PATH`).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from playwright.sync_api import Page, sync_playwright

from consentry.keys import Keyring
from consentry.policy import load_policy
from consentry.revocation import recipients_of
from consentry.scraping.evidence import HEADLESS_CHROMIUM_ARGS
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store

ROOT = Path(__file__).resolve().parents[1]
# The tests' way to start a server, so there is one: tools run from the checkout.
sys.path.insert(0, str(ROOT))
from tests.services import serving  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
WIDTH = 1280
MAX_HEIGHT = 2400
A4_HEIGHT = round(WIDTH * 297 / 210)
THIRD = "ai_training_third_party"
LICENSEE = "alpha"
SCRAPER = "scraper-alpha"


def consentry(home: Path, *args: str) -> str:
    """Run one `consentry` command for `home` as a user would; exit on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "--home", str(home), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"consentry {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def build_home(home: Path) -> None:
    """A demo home with something on every page the screenshots show (step 1)."""
    consentry(home, "init")
    consentry(home, "demo", "generate", "--users", "1000", "--posts", "10000",
              "--access-events", "5000")  # fmt: skip
    consentry(home, "licensee", "add", LICENSEE, "--purpose", THIRD)
    consentry(home, "licensee", "add", "eu-lab", "--purpose", THIRD, "--regions", "EU",
              "--languages", "de,fr")  # fmt: skip
    consentry(home, "deliver", LICENSEE, "--as-of", "2025-06-01")
    consentry(home, "deliver", "eu-lab", "--as-of", "2025-06-01")
    plan = home / "plan.json"
    consentry(home, "retention", "plan", "--out", str(plan))
    consentry(home, "retention", "apply", str(plan))
    consentry(home, "scraping", "assess")
    consentry(home, "scraping", "evidence", SCRAPER)


def delivered_author(home: Path) -> str:
    """The busiest demo user with posts delivered to LICENSEE (demo sign-in takes any user)."""
    settings = Settings(home=home)
    policy = load_policy(settings.policy_file)
    posts = pq.read_table(home / "demo" / "posts.parquet", columns=["author_id"])
    tally = pc.value_counts(posts.column("author_id")).to_pylist()
    counts = sorted(tally, key=lambda c: -c["counts"])
    with open_store(settings.resolved_database_url) as store:
        for entry in counts[:60]:
            if recipients_of(settings, store, policy, entry["values"]):
                return str(entry["values"])
    sys.exit(f"no busy author had a post delivered to {LICENSEE}")


def save(page: Page, path: Path, *, height: int = MAX_HEIGHT) -> None:
    """The page from its top, WIDTH wide and at most `height` tall, as a palette PNG (step 3)."""
    full = page.evaluate("document.documentElement.scrollHeight")
    raw = path.with_suffix(".raw.png")
    page.screenshot(
        path=str(raw),
        full_page=True,
        clip={"x": 0, "y": 0, "width": WIDTH, "height": min(full, height)},
    )
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True
        )
    raw.unlink()
    print(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}: "
          f"{path.stat().st_size // 1024} KiB")  # fmt: skip


def capture(home: Path, out: Path, chromium: str) -> None:
    """Steps 2 and 3 against a served `home`."""
    user = delivered_author(home)
    token = issue_token(Keyring.for_home(home).platform_secret, "docs", "admin")
    out.mkdir(parents=True, exist_ok=True)
    with serving(home, seconds=60) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, args=list(HEADLESS_CHROMIUM_ARGS)
        )
        context = browser.new_context(viewport={"width": WIDTH, "height": 900})
        page = context.new_page()

        page.goto(f"{url}/signin")
        csrf = page.locator("input[name=csrf]").first.get_attribute("value") or ""
        signed = context.request.post(
            f"{url}/signin", form={"user_id": user, "csrf": csrf}, max_redirects=0
        )
        if signed.status != 303:
            sys.exit(f"demo sign-in of {user} failed: {signed.status}")
        page.goto(f"{url}/settings/privacy")
        with page.expect_navigation():
            page.locator(f"#purpose-{THIRD} button").click()
        consentry(home, "revocations", LICENSEE)
        page.goto(f"{url}/settings/privacy")
        save(page, out / "settings.png")

        page.goto(f"{url}/transparency")
        save(page, out / "transparency.png")

        page.goto(f"{url}/admin/signin")
        page.get_by_label("Admin token").fill(token)
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        page.goto(f"{url}/admin/scraping/evidence/{SCRAPER}/report.html")
        page.wait_for_load_state("load")
        save(page, out / "evidence.png", height=A4_HEIGHT)
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=OUT, help="Where to write the PNGs.")
    parser.add_argument("--keep", type=Path, help="Build the demo home here and keep it.")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="The Chromium binary.")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        sys.exit(f"no Chromium at {args.chromium} (apt-get install chromium, or --chromium PATH)")
    if args.keep is not None:
        if args.keep.exists() and any(args.keep.iterdir()):
            sys.exit(f"{args.keep} is not empty: name a new directory")
        build_home(args.keep)
        capture(args.keep, args.out, args.chromium)
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="consentry-screenshots-"))
    try:
        build_home(scratch / "home")
        capture(scratch / "home", args.out, args.chromium)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
