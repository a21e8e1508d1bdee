"""`GET /v1/users/{user_id}/recipients`: who received a user's posts; a user sees only their
own, an admin anyone's; revocations move from pending to confirmed with receipts."""

from __future__ import annotations

import json

import pytest

from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from tests.api.conftest import Api, make_api


def _token(api: Api, subject: str, role: str = "user") -> str:
    secret = Keyring.for_home(api.home.settings.home).platform_secret
    return issue_token(secret, subject, role)  # type: ignore[arg-type]


def _recipients(api: Api, user_id: str, token: str) -> tuple[int, dict[str, object]]:
    response = api.client.get(
        f"/v1/users/{user_id}/recipients", headers={"Authorization": f"Bearer {token}"}
    )
    return response.status_code, response.json()


@pytest.fixture
def api(settings: Settings) -> Api:
    return make_api(settings)


def test_a_user_sees_each_licensee_that_received_their_posts(api: Api) -> None:
    status, body = _recipients(api, "u-us", _token(api, "u-us"))
    assert status == 200
    rows = {r["licensee"]: r for r in body["recipients"]}  # type: ignore[attr-defined]
    # u-us (US) posted p01 and p20: delivered to `open` and `alpha`, not to EU-only `beta`.
    assert set(rows) == {"open", "alpha"}
    alpha = rows["alpha"]
    assert alpha["posts"] == 2
    assert alpha["deliveries"] == 1
    assert alpha["purpose"] == "ai_training_third_party"
    assert alpha["revocations"] == {"total": 2, "pending": 2, "overdue": 0, "confirmed": 0}
    # `open`'s revocation job has not run since the opt-out: nothing revoked there yet.
    assert rows["open"]["revocations"]["total"] == 0


def test_receipts_turn_pending_into_confirmed(api: Api) -> None:
    feed = json.loads(api.feed("alpha").content)["revocations"]
    api.receipts("alpha", {"record_ids": [r["record_id"] for r in feed]})
    _, body = _recipients(api, "u-us", _token(api, "u-us"))
    alpha = next(r for r in body["recipients"] if r["licensee"] == "alpha")  # type: ignore[attr-defined]
    assert alpha["revocations"] == {"total": 2, "pending": 0, "overdue": 0, "confirmed": 2}


def test_only_the_user_or_an_admin_may_read_them(api: Api) -> None:
    assert _recipients(api, "u-us", _token(api, "u-jp"))[0] == 403
    assert _recipients(api, "u-us", _token(api, "ops", "admin"))[0] == 200
    assert _recipients(api, "u-us", "not-a-token")[0] == 401
    response = api.client.get("/v1/users/u-us/recipients")
    assert response.status_code == 401


def test_a_user_whose_posts_went_nowhere_has_no_recipients(api: Api) -> None:
    status, body = _recipients(api, "u-minor", _token(api, "u-minor"))
    assert status == 200
    assert body["recipients"] == []
