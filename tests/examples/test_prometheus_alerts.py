"""examples/prometheus-alerts.yml: promtool accepts it, it has the three alerts operators
need (overdue revocations, a scraper over 80 %, a checkpoint older than a day), and every
metric its expressions name is one `/metrics` exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consentry.api.app import create_app
from consentry.audit.log import AuditLog
from consentry.keys import Keyring
from consentry.scraping.meter import MemoryMeter, Meter
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import open_store
from tests.api.conftest import make_api
from tests.api.test_meter_limits import MIN, NO_OWNERS, TERMS
from tests.observe.test_metrics import _admin

RULES = Path(__file__).resolve().parents[2] / "examples" / "prometheus-alerts.yml"
PROMTOOL_INSTALL = "apt-get install -y prometheus"


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, f"promtool is needed ({PROMTOOL_INSTALL}; .ci/run installs it)"
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in done.stdout


def test_the_rules_watch_what_operators_need() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _rules()}
    assert "consentry_revocations_overdue" in exprs["ConsentryRevocationsOverdue"]
    assert re.search(r"consentry_meter_entity_threshold_ratio\b.*>= 0\.8", exprs[
        "ConsentryScraperOver80Percent"])  # fmt: skip
    assert re.search(r"consentry_audit_checkpoint_age_seconds\b.*> 86400", exprs[
        "ConsentryCheckpointOlderThanADay"])  # fmt: skip
    for rule in _rules():
        assert rule["annotations"]["summary"], rule


def test_every_metric_the_rules_name_is_exported(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    settings = api.home.settings
    with open_store(settings.resolved_database_url) as store:
        AuditLog(store).checkpoint(Signer.from_keyring(Keyring.for_home(home)), record=True)
    app = create_app(settings)
    app.state.scraping_meter = Meter(TERMS, NO_OWNERS, MemoryMeter(TERMS, MIN))
    client = TestClient(app)
    admin = _admin(home)
    event = {"request_id": "r", "ts": "2025-03-05T00:00:00Z", "credential": "ak", "posts": 9}
    assert client.post("/v1/meter/events", json={"events": [event]}, headers=admin).is_success
    assert client.put(
        "/v1/users/u-us/consent/ai_training_third_party",
        json={"choice": "deny"},
        headers=_user(home),
    ).is_success
    exported = {
        sample.name
        for family in text_string_to_metric_families(client.get("/metrics", headers=admin).text)
        for sample in family.samples
    }
    for rule in _rules():
        named = set(re.findall(r"\bconsentry_[a-z0-9_]+", rule["expr"]))
        assert named, rule
        assert named <= exported, (rule["alert"], named - exported)


def _user(home: Path) -> dict[str, str]:
    from consentry.serving.auth import issue_token

    token = issue_token(Keyring.for_home(home).platform_secret, "u-us", "user")
    return {"Authorization": f"Bearer {token}"}
