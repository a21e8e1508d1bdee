"""A service over a small, known population, with tokens for its users and an admin."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.api.auth import issue_token
from consentry.cli.admin import init_home
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import load_policy
from consentry.settings import Settings
from consentry.store import open_store
from tests.factories import users_table as make_users_table


@dataclass
class World:
    settings: Settings
    client: TestClient
    ledger: ConsentLedger
    keyring: Keyring

    def token(self, user_id: str, role: str = "user") -> dict[str, str]:
        token = issue_token(self.keyring.platform_secret, user_id, role)  # type: ignore[arg-type]
        return {"Authorization": f"Bearer {token}"}


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
    init_home(settings)
    store = open_store(settings.resolved_database_url)
    keyring = Keyring.for_home(settings.home)
    ledger = ConsentLedger(store, load_policy(settings.policy_file), keyring)
    ledger.sync_subjects(users_table())
    return World(settings, TestClient(create_app(settings)), ledger, keyring)
