"""/metrics: every family, summed over a real server's workers, after a delivery and
revocation cycle; meter families from the online meter; admin only."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consentry.api.app import create_app
from consentry.audit.log import AuditLog
from consentry.keys import Keyring
from consentry.observe.state import METER_TOP
from consentry.scraping.meter import MemoryMeter, Meter
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import open_store
from consentry.store.models import AuditHeadRow, RevocationRow
from tests.api.conftest import make_api
from tests.api.test_meter_limits import MIN, NO_OWNERS, TERMS
from tests.services import serving

PUT_ROUTE = "/v1/users/{user_id}/consent/{purpose}"
PURPOSE = "ai_training_third_party"
REQUESTS = 24


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a text exposition."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def _value(samples: dict[str, Any], name: str, **labels: str) -> float:
    values = [v for got, v in samples.get(name, []) if labels.items() <= got.items()]
    assert values, f"no {name}{labels} in {sorted(samples)}"
    return float(sum(values))


def _admin(home: Path, subject: str = "ops") -> dict[str, str]:
    token = issue_token(Keyring.for_home(home).platform_secret, subject, "admin")
    return {"Authorization": f"Bearer {token}"}


def test_every_family_after_a_delivery_and_revocation_cycle(tmp_path: Path) -> None:
    """Two deliveries, a revocation run per licensee, a checkpoint, then consent changes
    through a two-worker server: /metrics answers for all of it whichever worker answers."""
    home = tmp_path / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    settings = api.home.settings
    store = open_store(settings.resolved_database_url)
    AuditLog(store).checkpoint(Signer.from_keyring(Keyring.for_home(home)), record=True)
    # One of beta's revocations is a day past its deadline.
    beta = _licensee_id(store, "beta")
    with store.session() as session:
        first = session.scalar(
            sa.select(sa.func.min(RevocationRow.seq)).where(RevocationRow.licensee_id == beta)
        )
        now = datetime.now(UTC)
        session.execute(
            sa.update(RevocationRow)
            .where(RevocationRow.seq == first)
            .values(revoked_at=now - timedelta(days=40), due_at=now - timedelta(days=1))
        )
    secret = Keyring.for_home(home).platform_secret
    user = {"Authorization": f"Bearer {issue_token(secret, 'u-us', 'user')}"}
    with serving(home, workers=2) as url:
        for i in range(REQUESTS):
            # A new connection each time, so both workers answer some of them.
            response = httpx.put(
                f"{url}/v1/users/u-us/consent/{PURPOSE}",
                json={"choice": "deny" if i % 2 else "allow"},
                headers=user,
            )
            assert response.status_code == 200, response.text
        assert httpx.get(f"{url}/metrics").status_code == 401
        answer = httpx.get(f"{url}/metrics", headers=_admin(home))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = _samples(answer.text)

    duration = "consentry_http_request_duration_seconds_count"
    assert _value(found, duration, route=PUT_ROUTE, method="PUT", status="200") == REQUESTS
    assert _value(found, "consentry_consent_changes_total", purpose=PURPOSE, source="api") == (
        REQUESTS
    )
    for name in ("alpha", "beta"):
        manifest = api.get(name, f"/v1/licensee/deliveries/{api.deliveries[name]}/manifest").json()
        assert _value(found, "consentry_deliveries", licensee=name) == 1
        assert (
            _value(found, "consentry_delivery_records", licensee=name)
            == (manifest["counts"]["delivered"])
        )
        issued = sum(1 for lic, _, _ in api.log() if lic == _licensee_id(store, name))
        assert _value(found, "consentry_revocations_issued_total", licensee=name) == issued
        assert _value(found, "consentry_revocations_confirmed_total", licensee=name) == 0
    assert _value(found, "consentry_revocations_overdue", licensee="alpha") == 0
    assert _value(found, "consentry_revocations_overdue", licensee="beta") == 1
    with store.session() as session:
        size = session.scalar(sa.select(AuditHeadRow.size))
    assert _value(found, "consentry_audit_log_size") == size
    assert 0 <= _value(found, "consentry_audit_checkpoint_age_seconds") < 600
    assert _value(found, "consentry_audit_checkpoint_size") > 0
    for kind in ("deliver", "revoke"):
        assert _value(found, "consentry_job_duration_seconds_count", kind=kind, state="done") >= 2
        buckets = [
            v for labels, v in found["consentry_job_duration_seconds_bucket"]
            if labels["kind"] == kind and labels["state"] == "done"
        ]  # fmt: skip
        assert buckets == sorted(buckets), "cumulative buckets"
    store.close()


def _licensee_id(store: Any, name: str) -> str:
    with store.session() as session:
        return str(session.scalar(sa.text("SELECT id FROM licensees WHERE name = :n"), {"n": name}))


def test_the_meter_families_show_the_top_entities_against_the_threshold(
    settings: Settings,
) -> None:
    from consentry.cli.admin import init_home

    init_home(settings)
    app = create_app(settings)
    app.state.scraping_meter = Meter(TERMS, NO_OWNERS, MemoryMeter(TERMS, MIN))
    client = TestClient(app)
    admin = _admin(settings.home)
    # ak_0 reads 850,000 posts (85 % of the threshold); ak_1 … ak_11 fewer.
    events = [
        {"request_id": f"r{k}", "ts": "2025-03-05T00:00:00Z", "credential": f"ak_{k}",
         "posts": 850_000 - 10_000 * k}
        for k in range(METER_TOP + 2)
    ]  # fmt: skip
    assert client.post("/v1/meter/events", json={"events": events}, headers=admin).status_code == (
        200
    )
    found = _samples(client.get("/metrics", headers=admin).text)
    assert _value(found, "consentry_meter_threshold_posts") == 1_000_000
    ratios = {labels["entity"]: v for labels, v in found["consentry_meter_entity_threshold_ratio"]}
    assert len(ratios) == METER_TOP
    # Bare credentials are shown by a digest, never as themselves.
    assert all(re.fullmatch(r"credential:[0-9a-f]{16}", e) for e in ratios)
    assert max(ratios.values()) == pytest.approx(0.85)
    raised = client.get("/v1/meter/alerts", headers=admin).json()["alerts"]
    assert sum(a["level"] == 80 for a in raised) == 6  # 850,000 down to 800,000
    for level in {a["level"] for a in raised}:
        assert _value(found, "consentry_meter_alerts", level=str(level)) == sum(
            a["level"] == level for a in raised
        )


def test_metrics_need_an_admin_token(settings: Settings) -> None:
    from consentry.cli.admin import init_home

    init_home(settings)
    client = TestClient(create_app(settings))
    assert client.get("/metrics").status_code == 401
    user = issue_token(Keyring.for_home(settings.home).platform_secret, "alice", "user")
    refused = client.get("/metrics", headers={"Authorization": f"Bearer {user}"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
