"""The settings page, the API and the signals tell every demo user the same thing."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from consentry.api.app import create_app
from consentry.cli.main import app as cli
from consentry.keys import Keyring
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.serving.auth import issue_token
from consentry.settings import Settings

SAMPLE = 60


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("demo-home")
    runner = CliRunner()
    assert runner.invoke(cli, ["--home", str(home), "init"]).exit_code == 0
    result = runner.invoke(
        cli,
        [
            "--home",
            str(home),
            "demo",
            "generate",
            "--users",
            "2000",
            "--posts",
            "5000",
            "--access-events",
            "2000",
            "--seed",
            "11",
        ],
    )
    assert result.exit_code == 0, result.output
    return home


def test_page_api_and_signals_agree_for_a_sample_of_demo_users(demo_home: Path) -> None:
    settings = Settings(home=demo_home)
    ledger = ledger_for(settings)
    now = datetime.now(UTC)
    with ledger.store.session() as session:
        from sqlalchemy import select

        from consentry.store.models import ConsentEventRow, Subject

        with_events = list(
            session.scalars(select(ConsentEventRow.user_id).distinct().limit(SAMPLE // 2))
        )
        plain = list(
            session.scalars(select(Subject.user_id).order_by(Subject.user_id).limit(SAMPLE // 2))
        )
    sample = list(dict.fromkeys(with_events + plain))
    assert len(sample) >= SAMPLE // 2
    secret = Keyring.for_home(demo_home).platform_secret
    client = TestClient(create_app(settings))
    rules_seen: set[str] = set()
    for user_id in sample:
        expected = {d.purpose: d for d in ledger.resolve_all(user_id, now)}
        headers = {"Authorization": f"Bearer {issue_token(secret, user_id, 'user')}"}
        api = client.get("/v1/users/" + user_id + "/consent", headers=headers).json()
        api_decisions = {p["purpose"]: (p["decision"], p["rule"]) for p in api["purposes"]}
        assert api_decisions == {k: (d.decision.value, d.rule.value) for k, d in expected.items()}

        signals = client.get(f"/v1/users/{user_id}/signals", headers=headers).json()
        train_ai = [d for k, d in expected.items() if k.startswith("ai_training")]
        want = "n" if any(d.decision is Choice.DENY for d in train_ai) else "y"
        assert signals["aipref"]["train-ai"] == want, (user_id, signals)
        assert signals["tdm_reservation"] == (0 if want == "y" else 1)

        signin = client.get("/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', signin)
        assert csrf is not None
        client.post("/signin", data={"user_id": user_id, "csrf": csrf.group(1)})
        page = client.get("/settings/privacy").text
        states = dict(re.findall(r'data-state="([a-z_]+)"[^>]*>\s*(On|Off)\s*<', page))
        assert states == {
            k: ("On" if d.decision is Choice.ALLOW else "Off") for k, d in expected.items()
        }, user_id
        rules_seen |= {d.rule.value for d in expected.values()}
    # The sample covers the interesting rules, not just defaults.
    assert {"explicit", "region_default", "default"} <= rules_seen
    ledger.store.close()
