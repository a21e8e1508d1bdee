"""Boundary values at the API are bad input: 422 with a message in the documented shape, never
a 500. Instants outside the one accepted range (year 1 or 9999 with extreme offsets),
integers past 2^63, user ids with control characters."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from consentry.instants import RANGE_TEXT
from consentry.settings import Settings
from tests.api.conftest import World, make_world, problem_items

THIRD = "ai_training_third_party"
EXTREMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59+14:00",
    "1899-12-31T23:59:59Z",
    "2200-01-01T00:00:00Z",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One service for the module: nothing here changes anything."""
    home = tmp_path_factory.mktemp("boundaries") / "home"
    home.mkdir()
    return make_world(Settings(home=home))


def _assert_422(response: Any, where: tuple[str, int | None, str], words: str) -> None:
    """A 422 problem with an error at `where` (location, row, field) saying `words`."""
    assert response.status_code == 422, response.text
    items = problem_items(response)
    assert any(item[:3] == where and words in item[3] for item in items), items


@pytest.mark.parametrize("instant", EXTREMES)
def test_extreme_instants_in_queries_are_422(world: World, instant: str) -> None:
    admin = world.token("ops", "admin")
    for path in ("/v1/users/alice/consent", "/v1/users/alice/signals"):
        response = world.client.get(path, params={"at": instant}, headers=admin)
        _assert_422(response, ("query", None, "at"), RANGE_TEXT)
    for name in ("from", "to"):
        response = world.client.get("/v1/audit/transparency", params={name: instant})
        _assert_422(response, ("query", None, name), RANGE_TEXT)


@pytest.mark.parametrize("instant", EXTREMES)
def test_extreme_instants_in_bodies_are_422(world: World, instant: str) -> None:
    body = {"purpose": THIRD, "at": instant, "user_ids": ["alice"]}
    response = world.client.post(
        "/v1/consent/check", json=body, headers=world.token("ops", "admin")
    )
    _assert_422(response, ("body", None, "at"), RANGE_TEXT)
    event = {"request_id": "r1", "ts": instant, "credential": "ak_x", "posts": 1}
    response = world.client.post(
        "/v1/meter/events", json={"events": [event]}, headers=world.token("ops", "admin")
    )
    _assert_422(response, ("body", 1, "events[0].ts"), RANGE_TEXT)


def test_instants_at_the_ends_of_the_range_are_answered(world: World) -> None:
    admin = world.token("ops", "admin")
    for instant in ("1900-01-01T00:00:00Z", "2199-12-31T23:59:59.999999Z", "1900-01-01"):
        response = world.client.get(
            "/v1/users/alice/consent", params={"at": instant}, headers=admin
        )
        assert response.status_code == 200, response.text
    body = {"purpose": THIRD, "at": "2199-12-31T23:59:59Z", "user_ids": ["alice"]}
    response = world.client.post("/v1/consent/check", json=body, headers=admin)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ("/v1/audit/proof/10000000000000000000", ("path", "event_id")),
        (f"/v1/audit/proof/{2**63}", ("path", "event_id")),
        ("/v1/audit/proof/0", ("path", "event_id")),
        (f"/v1/audit/proof/1?size={2**63}", ("query", "size")),
        (f"/v1/audit/consistency?first={2**63}", ("query", "first")),
        (f"/v1/audit/consistency?first=1&second={2**64}", ("query", "second")),
    ],
)
def test_integers_past_64_bits_are_422(world: World, path: str, where: tuple[str, str]) -> None:
    response = world.client.get(path, headers=world.token("ops", "admin"))
    assert response.status_code == 422, response.text
    assert [(loc, field) for loc, _, field, _ in problem_items(response)] == [where]


def test_no_consistency_proof_from_the_empty_tree(world: World) -> None:
    response = world.client.get("/v1/audit/consistency?first=0")
    _assert_422(response, ("query", None, "first"), "greater than or equal to 1")


def test_the_largest_64_bit_index_is_a_404_not_an_overflow(world: World) -> None:
    response = world.client.get(f"/v1/audit/proof/{2**63 - 1}", headers=world.token("ops", "admin"))
    assert response.status_code == 404, response.text
    [(location, row, field, message)] = problem_items(response)
    assert (location, row, field) == ("path", None, "event_id"), message
    assert message


@pytest.mark.parametrize("user_id", ["al\x00ice", "al\nice", "\x7f", "u" * 129])
def test_user_ids_with_control_characters_or_too_long_are_422(world: World, user_id: str) -> None:
    admin = world.token("ops", "admin")
    response = world.client.get(f"/v1/users/{quote(user_id, safe='')}/consent", headers=admin)
    _assert_422(response, ("path", None, "user_id"), "")
    body = {"purpose": THIRD, "user_ids": ["alice", user_id]}
    response = world.client.post("/v1/consent/check", json=body, headers=admin)
    _assert_422(response, ("body", 2, "user_ids[1]"), "")


def test_rule_refusals_are_problems_like_schema_refusals(world: World) -> None:
    body = {"purpose": "no_such_purpose", "user_ids": ["alice"]}
    response = world.client.post(
        "/v1/consent/check", json=body, headers=world.token("ops", "admin")
    )
    _assert_422(response, ("body", None, "purpose"), "unknown purpose")
    response = world.client.get(
        "/v1/audit/transparency", params={"from": "2025-02-01", "to": "2025-01-01"}
    )
    _assert_422(response, ("query", None, "from"), "before its end")


@pytest.mark.parametrize(
    "query",
    [
        "first=0&first=1&second=1",  # a parameter given twice: which one was meant?
        "first=0.0&second=1",  # not a whole number, however lax parsing reads it
        "first=1e0&second=1",
    ],
)
def test_ambiguous_query_numbers_are_422(world: World, query: str) -> None:
    response = world.client.get(
        f"/v1/audit/consistency?{query}", headers=world.token("ops", "admin")
    )
    _assert_422(response, ("query", None, "first"), "")
