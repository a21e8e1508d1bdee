"""A service over a small, known population, with tokens for its users and an admin; and
one with licensees, deliveries and revocations (`make_api`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.delivery.licensees import registry_for
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import load_policy
from consentry.revocation import run_revocations
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import RevocationRow
from tests.delivery.conftest import AS_OF, EU_TERMS, THIRD
from tests.factories import users_table as make_users_table
from tests.revocation.conftest import RevocationHome, delivered_home


@dataclass
class World:
    settings: Settings
    client: TestClient
    ledger: ConsentLedger
    keyring: Keyring

    def token(self, user_id: str, role: str = "user") -> dict[str, str]:
        token = issue_token(self.keyring.platform_secret, user_id, role)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}

    def requests_counted(self, route: str, method: str, status: str) -> float:
        """Requests counted so far for (route, method, status) on `/metrics`."""
        text = self.client.get("/metrics", headers=self.token("ops", "admin")).text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "consentry_http_request_duration_seconds_count"
            and sample.labels == {"route": route, "method": method, "status": status}
        )


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def request_log_lines() -> Iterator[list[dict[str, Any]]]:
    """The fields of the `http.request` log lines written inside the block (without their
    duration, which varies), filled in when the block ends."""
    logger = logging.getLogger("consentry.http")
    records = _Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
        lines.extend(
            {k: v for k, v in r.fields.items() if k != "ms"}  # type: ignore[attr-defined]
            for r in records.records
            if getattr(r, "event", None) == "http.request"
        )


POPULATION = [
    # user_id, region, birth_date
    ("alice", "US", date(1990, 4, 1)),
    ("berta", "DE", date(1985, 7, 9)),
    ("chloe", "GB", None),
    ("dani", "BR", date(2012, 1, 1)),
]


def users_table() -> pa.Table:
    return make_users_table(POPULATION)


@pytest.fixture
def world(settings: Settings) -> World:
    return make_world(settings)


def make_world(settings: Settings) -> World:
    """An initialised home whose ledger knows POPULATION, and a client of its service."""
    init_home(settings)
    store = open_store(settings.resolved_database_url)
    keyring = Keyring.for_home(settings.home)
    ledger = ConsentLedger(store, load_policy(settings.policy_file), keyring)
    ledger.sync_subjects(users_table())
    return World(settings, TestClient(create_app(settings)), ledger, keyring)


@dataclass
class Api:
    """A service whose licensees `alpha`, `beta` and `gone` (disabled) have API keys."""

    home: RevocationHome
    client: TestClient
    keys: dict[str, str]
    deliveries: dict[str, str]

    def get(self, who: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}", **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def receipts(self, who: str, body: Any, **headers: str) -> Any:
        return self.client.post(
            "/v1/licensee/revocations/receipts",
            content=json.dumps(body),
            headers={
                "Authorization": f"Bearer {self.keys[who]}",
                "Content-Type": "application/json",
                **headers,
            },
        )

    def feed(self, who: str, cursor: str = "", limit: int = 100) -> Any:
        return self.get(who, "/v1/licensee/revocations", params={"cursor": cursor, "limit": limit})

    def log(self) -> list[tuple[str, str, Any]]:
        url = self.home.settings.resolved_database_url
        with open_store(url) as store, store.session() as session:
            rows = session.execute(
                sa.select(
                    RevocationRow.licensee_id, RevocationRow.record_id, RevocationRow.confirmed_at
                ).order_by(RevocationRow.seq)
            ).all()
            return [(str(a), str(b), c) for a, b, c in rows]


def make_api(settings: Settings) -> Api:
    """Licensees `alpha` (no scope) and `beta` (EU), each with one delivery at AS_OF;
    u-us and u-de-in opted out since; the revocation job run for both."""
    home, _ = delivered_home(settings)
    registry = registry_for(home.settings)
    try:
        keys = {
            "alpha": registry.add("alpha", THIRD).api_key,
            "beta": registry.add("beta", THIRD, **EU_TERMS).api_key,
            "gone": registry.add("gone", THIRD).api_key,
        }
        registry.disable("gone")
    finally:
        registry.store.close()
    deliveries = {
        name: home.deliver(name, as_of=AS_OF)["delivery_id"] for name in ("alpha", "beta")
    }
    home.opt_out("u-us", at=datetime.now(UTC) - timedelta(minutes=2))
    home.opt_out("u-de-in", at=datetime.now(UTC) - timedelta(minutes=2))
    for name in ("alpha", "beta"):
        run_revocations(home.settings, name)
    return Api(home, TestClient(create_app(home.settings)), keys, deliveries)


def problem_items(response: Any) -> list[tuple[str, int | None, str | None, str]]:
    """A refusal's problem (RFC 9457, `application/problem+json`): its errors as
    (location, row, field, message), after checking the body's shape."""
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert body["status"] == response.status_code, body
    assert body["type"] == "about:blank", body
    assert body["title"], body
    assert body["detail"], body
    assert body["request_id"] == response.headers["x-request-id"], body
    return [(e["location"], e["row"], e["field"], e["message"]) for e in body["errors"]]
