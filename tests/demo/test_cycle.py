"""`consentry demo cycle` on a small generated demo: every state the demo must show, once.

What `make run` relies on: after init, generate/load and the cycle, "who received my posts",
the revocation admin page, the scraping admin page and the transparency report have data,
the sign-in list offers a person in each interesting state, and running the cycle again
(as every `make run` does) changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from consentry.api.app import create_app
from consentry.audit import SqlAuditSink
from consentry.cli.main import app
from consentry.demo.cycle import CONFIRMED_AUTHORS, CYCLE_LICENSEE, CYCLE_PURPOSE, OPT_OUT_AUTHORS
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import ConsentEventRow, RevocationRow

SIZES = ["--users", "600", "--posts", "6000", "--access-events", "2000", "--seed", "5"]
runner = CliRunner()


def run(home: Path, *args: str) -> Any:
    result = runner.invoke(app, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output
    return result


@dataclass
class Cycled:
    home: Path
    first: dict[str, Any]
    second: dict[str, Any]


@pytest.fixture(scope="module")
def cycled(tmp_path_factory: pytest.TempPathFactory) -> Cycled:
    home = tmp_path_factory.mktemp("cycle") / "home"
    run(home, "init")
    run(home, "demo", "generate", *SIZES)
    first = json.loads(run(home, "demo", "cycle", "--json").stdout)
    # What a second `make run` does: load the same demo again, then the cycle again.
    run(home, "demo", "load")
    second = json.loads(run(home, "demo", "cycle", "--json").stdout)
    return Cycled(home, first, second)


def test_the_first_run_makes_one_of_everything(cycled: Cycled) -> None:
    first = cycled.first
    assert first["licensee"] == CYCLE_LICENSEE
    assert first["licensee_created"]
    assert first["api_key"].startswith("csk_")
    assert first["delivery_created"]
    assert first["delivered_posts"] > 0
    assert len(first["opted_out"]) == OPT_OUT_AUTHORS
    assert first["opted_out"] == first["opt_out_authors"] == sorted(first["opt_out_authors"])
    assert first["revocations_new"] == first["revocations_total"] > 0
    assert first["confirmed"] > 0
    assert first["receipt_id"].startswith("rcp-")
    assert first["assessment_created"]
    assert first["assessment_id"]


def test_revocations_cover_exactly_the_opted_out_authors(cycled: Cycled) -> None:
    authors = cycled.first["opt_out_authors"]
    url = Settings(home=cycled.home).resolved_database_url
    with open_store(url) as store, store.session() as session:
        rows = session.execute(sa.select(RevocationRow.author_id, RevocationRow.confirmed_at)).all()
    assert {a for a, _ in rows} == set(authors)
    confirmed = {a for a, at in rows if at is not None}
    assert confirmed == set(authors[:CONFIRMED_AUTHORS])
    assert len(rows) == cycled.first["revocations_total"]
    assert sum(at is not None for _, at in rows) == cycled.first["confirmed"]


def test_running_again_changes_nothing(cycled: Cycled) -> None:
    second = cycled.second
    assert not second["licensee_created"]
    assert second["api_key"] is None
    assert not second["delivery_created"]
    assert second["delivery_id"] == cycled.first["delivery_id"]
    assert second["opted_out"] == []
    assert second["opt_out_authors"] == cycled.first["opt_out_authors"]
    assert second["revocations_new"] == second["confirmed"] == 0
    assert second["revocations_total"] == cycled.first["revocations_total"]
    assert second["receipt_id"] is None
    assert not second["assessment_created"]
    # Each step happened once: one audit event of each kind, one opt-out per author.
    url = Settings(home=cycled.home).resolved_database_url
    with open_store(url) as store, store.session() as session:
        types = [e.event_type for e in SqlAuditSink.read(session)]
        opt_outs = session.scalars(
            sa.select(ConsentEventRow.user_id).where(
                ConsentEventRow.evidence_origin == "consentry demo cycle"
            )
        ).all()
    assert sorted(opt_outs) == cycled.first["opt_out_authors"]
    for event_type in (
        "licensee.changed",
        "delivery.built",
        "revocation.issued",
        "revocation.confirmed",
        "scraping.assessed",
    ):
        assert types.count(event_type) == 1, (event_type, types.count(event_type))


def test_the_opt_outs_are_settings_choices_of_the_cycle(cycled: Cycled) -> None:
    author = cycled.first["opt_out_authors"][0]
    shown = json.loads(run(cycled.home, "consent", "show", author, "--json").stdout)
    [third] = [p for p in shown["purposes"] if p["purpose"] == CYCLE_PURPOSE]
    assert (third["decision"], third["rule"]) == ("deny", "explicit")


# --- the pages a visitor opens first ---------------------------------------------------------


@pytest.fixture(scope="module")
def client(cycled: Cycled) -> TestClient:
    return TestClient(create_app(Settings(home=cycled.home)))


def _labelled(client: TestClient) -> dict[str, str]:
    page = client.get("/signin").text
    labels = {}
    for found in re.finditer(r'value="([^"]+)"[^>]*>\s*<label[^>]*>(.*?)</label>', page, re.S):
        text = re.sub(r"<[^>]+>", "", found.group(2))
        label = re.search(r"\(([^()]+)\)$", text.strip())
        if label:
            labels[label.group(1)] = found.group(1)
    return labels


def _sign_in(client: TestClient, user_id: str) -> None:
    page = client.get("/signin").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None
    response = client.post(
        "/signin", data={"user_id": user_id, "csrf": token.group(1)}, follow_redirects=False
    )
    assert response.status_code == 303


def test_signin_offers_a_person_in_every_state(client: TestClient, cycled: Cycled) -> None:
    labels = _labelled(client)
    assert set(labels) == {
        "a minor",
        "Global Privacy Control",
        "posts delivered, then revoked, deletion confirmed",
        "protected account",
        "opted in",
    }
    revoked = labels["posts delivered, then revoked, deletion confirmed"]
    assert revoked in cycled.first["opt_out_authors"][:CONFIRMED_AUTHORS]
    expected = {
        "a minor": "Off: this is never used for people under 18.",
        "Global Privacy Control": "Off: your browser's Global Privacy Control signal",
        "posts delivered, then revoked, deletion confirmed": "Off: you switched it off on",
        "opted in": "On: you switched it on on",
    }
    for label, reason in expected.items():
        client.cookies.clear()
        _sign_in(client, labels[label])
        page = client.get("/settings/privacy").text
        assert reason in page.replace("&#39;", "'"), label


def test_who_received_my_posts_shows_the_delivery_and_the_confirmed_deletion(
    client: TestClient,
) -> None:
    revoked = _labelled(client)["posts delivered, then revoked, deletion confirmed"]
    client.cookies.clear()
    _sign_in(client, revoked)
    page = " ".join(
        re.sub(r"<[^>]+>", " ", client.get("/settings/privacy/recipients").text).split()
    )
    assert CYCLE_LICENSEE in page
    assert "0 pending" in page
    assert "confirmed" in page
