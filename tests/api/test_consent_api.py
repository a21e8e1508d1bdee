"""The consent API: reads, changes, bulk checks, signals; authentication on every route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consentry.serving.auth import issue_token
from tests.api.conftest import World, problem_items

THIRD = "ai_training_third_party"

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/users/{u}/consent", None),
    ("PUT", "/v1/users/{u}/consent/" + THIRD, {"choice": "deny"}),
    ("GET", "/v1/users/{u}/consent/history", None),
    ("POST", "/v1/consent/check", {"purpose": THIRD, "user_ids": ["{u}"]}),
    ("GET", "/v1/users/{u}/signals", None),
]


def _call(
    world: World, method: str, path: str, body: Any, user: str, headers: dict[str, str]
) -> Any:
    url = path.replace("{u}", user)
    if body is not None:
        body = {
            k: ([x.replace("{u}", user) for x in v] if isinstance(v, list) else v)
            for k, v in body.items()
        }
    return world.client.request(method, url, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_needs_a_valid_token(world: World, method: str, path: str, body: Any) -> None:
    events_before = len(world.ledger.history("alice"))
    missing = _call(world, method, path, body, "alice", {})
    assert missing.status_code == 401
    assert "bearer token" in missing.json()["detail"]
    [(location, _, field, _)] = problem_items(missing)
    assert (location, field) == ("header", "Authorization")
    forged = issue_token(b"not-our-secret" * 3, "alice", "user")
    bad = _call(world, method, path, body, "alice", {"Authorization": f"Bearer {forged}"})
    assert bad.status_code == 401
    expired = issue_token(
        world.keyring.platform_secret,
        "alice",
        "user",
        lifetime=timedelta(days=1),
        now=datetime.now(UTC) - timedelta(days=3),
    )
    old = _call(world, method, path, body, "alice", {"Authorization": f"Bearer {expired}"})
    assert old.status_code == 401
    assert "expired" in old.json()["detail"].lower()
    assert len(world.ledger.history("alice")) == events_before


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_a_user_cannot_act_on_another(world: World, method: str, path: str, body: Any) -> None:
    response = _call(world, method, path, body, "berta", world.token("alice"))
    assert response.status_code == 403
    assert world.ledger.history("berta") == []


def test_admin_reads_and_checks_anyone_but_never_chooses(world: World) -> None:
    admin = world.token("ops", "admin")
    assert world.client.get("/v1/users/berta/consent", headers=admin).status_code == 200
    assert world.client.get("/v1/users/berta/signals", headers=admin).status_code == 200
    check = world.client.post(
        "/v1/consent/check", json={"purpose": THIRD, "user_ids": ["berta"]}, headers=admin
    )
    assert check.status_code == 200
    put = world.client.put(
        f"/v1/users/berta/consent/{THIRD}", json={"choice": "allow"}, headers=admin
    )
    assert put.status_code == 403
    assert world.ledger.history("berta") == []


def test_read_consent_explains_each_purpose(world: World) -> None:
    body = world.client.get("/v1/users/berta/consent", headers=world.token("berta")).json()
    assert body["policy_version"] == "2024-11-15"
    third = next(p for p in body["purposes"] if p["purpose"] == THIRD)
    assert third == {
        "purpose": THIRD,
        "title": "Third-party AI training",
        "decision": "deny",
        "rule": "region_default",
        "since": "2024-11-15T00:00:00Z",
        "policy_version": "2024-11-15",
    }
    minor = world.client.get("/v1/users/dani/consent", headers=world.token("dani")).json()
    assert {p["rule"] for p in minor["purposes"]} == {"minor"}


def test_a_change_takes_effect_immediately_and_is_in_the_history(world: World) -> None:
    headers = world.token("alice")
    before = world.client.get("/v1/users/alice/consent", headers=headers).json()
    assert next(p for p in before["purposes"] if p["purpose"] == THIRD)["decision"] == "allow"
    put = world.client.put(
        f"/v1/users/alice/consent/{THIRD}", json={"choice": "deny"}, headers=headers
    )
    assert put.status_code == 200, put.text
    event = put.json()
    assert event["source"] == "api"
    assert event["policy_version"] == "2024-11-15"
    after = world.client.get("/v1/users/alice/consent", headers=headers).json()
    third = next(p for p in after["purposes"] if p["purpose"] == THIRD)
    assert (third["decision"], third["rule"]) == ("deny", "explicit")
    history = world.client.get("/v1/users/alice/consent/history", headers=headers).json()
    assert [e["choice"] for e in history["events"]] == ["deny"]
    signals = world.client.get("/v1/users/alice/signals", headers=headers).json()
    assert signals["aipref"]["train-ai"] == "n"
    assert signals["tdm_reservation"] == 1


def test_reading_the_past(world: World) -> None:
    headers = world.token("alice")
    past = world.client.get(
        "/v1/users/alice/consent", params={"at": "2024-06-01T00:00:00Z"}, headers=headers
    ).json()
    assert past["policy_version"] == "2023-09-29"
    assert THIRD not in {p["purpose"] for p in past["purposes"]}


def test_gpc_is_recorded_once_and_respects_explicit_choices(world: World) -> None:
    headers = {**world.token("alice"), "Sec-GPC": "1"}
    world.client.put(
        "/v1/users/alice/consent/business_partners",
        json={"choice": "allow"},
        headers=world.token("alice"),
    )
    first = world.client.get("/v1/users/alice/consent", headers=headers).json()
    assert sorted(first["gpc_recorded"]) == ["ai_training_first_party", THIRD]
    rules = {p["purpose"]: p["rule"] for p in first["purposes"]}
    assert rules == {
        THIRD: "gpc",
        "ai_training_first_party": "gpc",
        "business_partners": "explicit",
    }
    again = world.client.get("/v1/users/alice/consent", headers=headers).json()
    assert again["gpc_recorded"] == []
    assert len(world.ledger.history("alice")) == 3


def test_bulk_check_answers_in_order(world: World) -> None:
    ids = ["dani", "alice", "nobody", "berta", "alice"]
    response = world.client.post(
        "/v1/consent/check",
        json={"purpose": THIRD, "user_ids": ids},
        headers=world.token("ops", "admin"),
    )
    assert response.status_code == 200, response.text
    decisions = response.json()["decisions"]
    assert [d["user_id"] for d in decisions] == ids
    assert [d["rule"] for d in decisions] == [
        "minor",
        "default",
        "default",
        "region_default",
        "default",
    ]
    assert [d["known_user"] for d in decisions] == [True, True, False, True, True]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "code", "message"),
    [
        (
            "PUT",
            "/v1/users/alice/consent/no_such",
            {"json": {"choice": "deny"}},
            404,
            "unknown purpose",
        ),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", {"json": {"choice": "maybe"}}, 422, "choice"),
        (
            "PUT",
            f"/v1/users/alice/consent/{THIRD}",
            {"content": "choice=deny", "headers": {"content-type": "text/plain"}},
            415,
            "application/json",
        ),
        ("GET", "/v1/users/alice/consent?at=yesterday", {}, 422, "RFC 3339"),
        ("GET", "/v1/users/alice/consent?at=2025-01-01T00:00:00", {}, 422, "offset"),
        (
            "POST",
            "/v1/consent/check",
            {"json": {"purpose": "nope", "user_ids": ["alice"]}},
            422,
            "unknown purpose",
        ),
        (
            "POST",
            "/v1/consent/check",
            {"json": {"purpose": THIRD, "user_ids": ["alice"] * 100_001}},
            422,
            "100000",
        ),
        (
            "POST",
            "/v1/consent/check",
            {"json": {"purpose": THIRD, "at": "2025-01-01", "user_ids": ["alice"]}},
            422,
            "at",
        ),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_change_nothing(
    world: World, method: str, path: str, kwargs: dict[str, Any], code: int, message: str
) -> None:
    headers = {
        **world.token(
            "alice" if "check" not in path else "ops", "user" if "check" not in path else "admin"
        ),
        **kwargs.pop("headers", {}),
    }
    response = world.client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == code, response.text
    assert message.lower() in response.text.lower().replace(",", "")
    assert world.ledger.history("alice") == []


def _put(world: World, user: str, **headers: str) -> Any:
    return world.client.put(
        f"/v1/users/{user}/consent/{THIRD}",
        json={"choice": "deny"},
        headers={**world.token(user), **headers},
    )


def test_consent_for_a_user_the_platform_does_not_know_is_404(world: World) -> None:
    response = _put(world, "nobody")
    assert response.status_code == 404, response.text
    assert "no user 'nobody'" in response.json()["detail"]
    assert world.ledger.history("nobody") == []


@pytest.mark.parametrize("shown", ["x" * 3000, "2099-01-01", "2024-11-15 ", "latest", ""])
def test_the_shown_policy_must_name_a_published_version(world: World, shown: str) -> None:
    response = _put(world, "alice", **{"X-Consentry-Shown-Policy": shown})
    assert response.status_code == 422, response.text
    [(location, row, field, message)] = problem_items(response)
    assert (location, row, field) == ("header", None, "X-Consentry-Shown-Policy")
    assert "not a published policy version" in message
    assert "2023-09-29, 2024-11-15" in message
    assert world.ledger.history("alice") == []


@pytest.mark.parametrize("shown", ["2023-09-29", "2024-11-15"])
def test_a_published_shown_policy_is_the_events_evidence(world: World, shown: str) -> None:
    response = _put(world, "alice", **{"X-Consentry-Shown-Policy": shown})
    assert response.status_code == 200, response.text
    assert response.json()["evidence_shown_version"] == shown
    [event] = world.ledger.history("alice")
    assert event.evidence.shown_version == shown
