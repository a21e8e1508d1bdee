"""A demo home over a small, known population, and a browser-like client for its pages."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from httpx2 import Response  # what starlette's TestClient returns when httpx2 is installed

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.keys import Keyring
from consentry.ledger.service import ConsentEventRecord, ConsentLedger
from consentry.policy import load_policy
from consentry.settings import Settings
from consentry.store import open_store
from tests.factories import users_table as make_users_table
from tests.web.html import Element, parse_html

__all__ = ["POPULATION", "Site", "users_table"]

POPULATION = [
    # user_id, region, birth_date
    ("alice", "US", date(1990, 4, 1)),  # adult outside Europe: defaults are on
    ("berta", "DE", date(1985, 7, 9)),  # adult in the EU: opted out unless she opts in
    ("chloe", "GB", None),  # unknown age in the UK
    ("dani", "BR", date(2012, 1, 1)),  # a minor
    ("emil", "CA", date(1970, 2, 2)),  # adult outside Europe, for GPC
]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def users_table() -> pa.Table:
    return make_users_table(POPULATION)


@dataclass
class Site:
    """The pages of one home, seen through a client that keeps its session cookie."""

    settings: Settings
    client: TestClient
    ledger: ConsentLedger

    def page(self, path: str, **headers: str) -> tuple[Response, Element]:
        response = self.client.get(path, headers=headers, follow_redirects=False)
        return response, parse_html(response.text)

    def csrf(self) -> str:
        """The CSRF token the sign-in page hands out for this session."""
        found = _CSRF.search(self.client.get("/signin").text)
        assert found, "the sign-in page carries no CSRF token"
        return found.group(1)

    def sign_in(self, user_id: str) -> None:
        response = self.client.post(
            "/signin", data={"user_id": user_id, "csrf": self.csrf()}, follow_redirects=False
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/settings/privacy"

    def switch(self, purpose: str, choice: str, csrf: str | None = None) -> Response:
        response: Response = self.client.post(
            f"/settings/privacy/{purpose}",
            data={"choice": choice, "csrf": self.csrf() if csrf is None else csrf},
            follow_redirects=False,
        )
        return response

    def history(self, user_id: str) -> list[ConsentEventRecord]:
        return self.ledger.history(user_id)


def make_site(settings: Settings, *, demo: bool) -> Site:
    """Initialise the home, tell the ledger about the population, and (demo) mark it a demo."""
    init_home(settings)
    ledger = ConsentLedger(
        open_store(settings.resolved_database_url),
        load_policy(settings.policy_file),
        Keyring.for_home(settings.home),
    )
    ledger.sync_subjects(users_table())
    if demo:
        marker = settings.home / "demo" / "demo.json"
        marker.parent.mkdir()
        marker.write_text(json.dumps({"users": len(POPULATION), "seed": 1}))
    return Site(settings, TestClient(create_app(settings)), ledger)


@pytest.fixture
def site(settings: Settings) -> Site:
    """A demo home: sign-in lists its users."""
    return make_site(settings, demo=True)


@pytest.fixture
def plain_site(settings: Settings) -> Site:
    """A home with the same subjects but no demo platform."""
    return make_site(settings, demo=False)
