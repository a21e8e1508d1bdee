"""The consent GET and PUT fast path (`consentry.api.consent_fast`) answers exactly as the
routes: the same bytes and header fields for every answer and every refusal, the same GPC
recording, the same log line and metrics, and a 2xx PUT's change and audit event committed.

Byte-for-byte comparisons run the same requests against twin homes — one answered by the
fast path, the other by the routes (a query string the routes ignore sends a request past
the fast path) — with the clock frozen and the same `X-Request-Id` on both, so only the new
events' random ids differ (and are masked)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from consentry.api.app import create_app
from consentry.api.consent_fast import PREFIX, ConsentFastPath, wanted
from consentry.serving.auth import issue_token
from consentry.serving.services import Services
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import AuditEventRow
from tests.api.conftest import World, make_world, problem_items, request_log_lines
from tests.services import postgres_schema

THIRD = "ai_training_third_party"
FROZEN = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
_EVENT_ID = re.compile(rb"c-[0-9a-f]{32}")


class _Clock(datetime):
    """`datetime` whose `now` is FROZEN (the answers carry the instant they were made at)."""

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Any:
        return FROZEN.astimezone(tz) if tz is not None else FROZEN.replace(tzinfo=None)


def _world(home: Path, database_url: str | None = None) -> World:
    home.mkdir()
    return make_world(Settings(home=home, database_url=database_url))


@pytest.fixture(params=["sqlite", "postgresql"])
def twins(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[World, World]]:
    """Two homes built alike: the first answered by the fast path, the second by the routes."""
    monkeypatch.setattr("consentry.api.consent.datetime", _Clock)
    monkeypatch.setattr("consentry.ledger.service.datetime", _Clock)
    if request.param == "sqlite":
        yield _world(tmp_path / "fast"), _world(tmp_path / "routed")
        return
    with postgres_schema() as fast_url, postgres_schema() as routed_url:
        yield _world(tmp_path / "fast", fast_url), _world(tmp_path / "routed", routed_url)


def _services(world: World) -> Services:
    svc: Services = world.client.app.state.services  # type: ignore[attr-defined]
    return svc


def _auth(world: World, who: str | None, role: str) -> dict[str, str]:
    return world.token(who, role) if who is not None else {}


_counter = iter(range(1, 1_000_000))


def _both(
    twins: tuple[World, World],
    method: str,
    path: str,
    *,
    who: str | None = "alice",
    role: str = "user",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    json_body: Any = None,
) -> tuple[Any, Any]:
    """The request against both twins (the second past the fast path); both answers, after
    checking that they are the same bytes."""
    fast_world, routed_world = twins
    rid = f"req-{next(_counter)}"
    extra = {"X-Request-Id": rid, **(headers or {})}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        extra.setdefault("Content-Type", "application/json")
    fast = fast_world.client.request(
        method, path, headers=_auth(fast_world, who, role) | extra, content=body
    )
    routed = routed_world.client.request(
        method,
        path,
        headers=_auth(routed_world, who, role) | extra,
        content=body,
        params={"via": "route"},
    )
    assert fast.status_code == routed.status_code, (path, fast.text, routed.text)
    assert fast.headers.multi_items() == routed.headers.multi_items(), path
    assert _EVENT_ID.sub(b"c-*", fast.content) == _EVENT_ID.sub(b"c-*", routed.content), path
    assert fast.headers["x-request-id"] == rid
    return fast, routed


def test_answers_are_the_routes_byte_for_byte(twins: tuple[World, World]) -> None:
    put = f"/v1/users/alice/consent/{THIRD}"
    fast, _ = _both(twins, "GET", "/v1/users/alice/consent")
    assert fast.status_code == 200
    assert fast.headers["content-type"] == "application/json"
    assert fast.headers["x-content-type-options"] == "nosniff"
    assert fast.json()["at"] == "2026-03-04T05:06:07.890123Z"
    _both(twins, "GET", "/v1/users/berta/consent", who="ops", role="admin")
    fast, _ = _both(twins, "PUT", put, json_body={"choice": "deny"})
    assert fast.status_code == 200
    assert fast.json()["choice"] == "deny"
    fast, _ = _both(twins, "GET", "/v1/users/alice/consent")
    [third] = [p for p in fast.json()["purposes"] if p["purpose"] == THIRD]
    assert third["decision"] == "deny"  # read your write
    _both(twins, "PUT", put, body=b'{"choice": "allow"}',
          headers={"Content-Type": "Application/JSON; charset=utf-8"})  # fmt: skip
    _both(twins, "PUT", put, json_body={"choice": "deny"},
          headers={"X-Consentry-Shown-Policy": "2023-09-29"})  # fmt: skip
    assert _events(twins, "alice")[0] == [
        (THIRD, "allow", "api", "2024-11-15"),
        (THIRD, "deny", "api", "2023-09-29"),
        (THIRD, "deny", "api", "2024-11-15"),
    ]


def _events(twins: tuple[World, World], user_id: str) -> list[list[tuple[str, str, str, str]]]:
    """Each twin's events of the user (all made at the frozen instant, so ordered by their
    random ids in the history: sorted here), after checking that they are the same."""
    found = [
        sorted(
            (e.purpose, e.choice.value, e.source, e.evidence.shown_version or "")
            for e in world.ledger.history(user_id)
        )
        for world in twins
    ]
    assert found[0] == found[1]
    return found


def test_gpc_is_recorded_as_by_the_routes(twins: tuple[World, World]) -> None:
    gpc = {"Sec-GPC": "1"}
    fast, _ = _both(twins, "GET", "/v1/users/alice/consent", headers=gpc)
    assert fast.json()["gpc_recorded"]
    fast, _ = _both(twins, "GET", "/v1/users/alice/consent", headers=gpc)
    assert fast.json()["gpc_recorded"] == []  # recorded once
    # Admins' requests never record it; a PUT with it records it before the change.
    fast, _ = _both(twins, "GET", "/v1/users/berta/consent", who="ops", role="admin",
                    headers=gpc)  # fmt: skip
    assert fast.json()["gpc_recorded"] == []
    _both(twins, "PUT", f"/v1/users/berta/consent/{THIRD}", who="berta",
          json_body={"choice": "allow"}, headers={"Sec-GPC": " 1 "})  # fmt: skip
    assert (THIRD, "allow", "api", "2024-11-15") in _events(twins, "berta")[0]
    assert any(source == "gpc" for _, _, source, _ in _events(twins, "berta")[0])
    assert any(source == "gpc" for _, _, source, _ in _events(twins, "alice")[0])


def test_refusals_are_the_routes_byte_for_byte(twins: tuple[World, World]) -> None:
    get = "/v1/users/alice/consent"
    put = f"/v1/users/alice/consent/{THIRD}"
    deny = {"choice": "deny"}
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        # Authentication and authorisation.
        ("GET", get, {"who": None}, 401),
        ("PUT", put, {"who": None, "json_body": deny}, 401),
        ("GET", get, {"who": None, "headers": {"Authorization": "Bearer not-a-token"}}, 401),
        ("GET", get, {"who": None, "headers": {"Authorization": "Basic YTpi"}}, 401),
        ("GET", get, {"who": None, "headers": {"Authorization": "Bearer  "}}, 401),
        ("GET", get, {"who": "berta"}, 403),
        ("PUT", put, {"who": "berta", "json_body": deny}, 403),
        ("PUT", put, {"who": "ops", "role": "admin", "json_body": deny}, 403),
        # The body and its content type.
        ("PUT", put, {"body": b'{"choice": "deny"}'}, 415),
        (
            "PUT",
            put,
            {"body": b'{"choice": "deny"}', "headers": {"Content-Type": "text/plain"}},
            415,
        ),
        ("PUT", put, {"json_body": {"choice": "maybe"}}, 422),
        ("PUT", put, {"json_body": {"choice": "DENY"}}, 422),
        ("PUT", put, {"json_body": {"choice": "deny", "extra": 1}}, 422),
        ("PUT", put, {"json_body": {"choice": None}}, 422),
        ("PUT", put, {"json_body": ["deny"]}, 422),
        ("PUT", put, {"json_body": {}}, 422),
        ("PUT", put, {"body": b"{not json", "headers": {"Content-Type": "application/json"}}, 422),
        ("PUT", put, {"body": b"", "headers": {"Content-Type": "application/json"}}, 422),
        # The path and the shown policy.
        ("PUT", "/v1/users/alice/consent/no_such_purpose", {"json_body": deny}, 404),
        ("PUT", put, {"json_body": deny, "headers": {"X-Consentry-Shown-Policy": "1999"}}, 422),
        ("GET", f"/v1/users/{'a' * 129}/consent", {"who": "a" * 129}, 422),
        ("GET", "/v1/users/a%01b/consent", {"who": "a\x01b"}, 422),
        # A user the platform does not know: nothing is recorded.
        ("PUT", f"/v1/users/zoe/consent/{THIRD}", {"who": "zoe", "json_body": deny}, 404),
    ]
    for method, path, options, status in cases:
        fast, _ = _both(twins, method, path, **options)
        assert fast.status_code == status, (method, path, options, fast.text)
        assert problem_items(fast) is not None
    for world in twins:
        assert [e.event_id for e in world.ledger.history("alice")] == []
        assert world.ledger.history("zoe") == []


def _payloads(world: World, event_type: str) -> list[dict[str, Any]]:
    with open_store(world.settings.resolved_database_url) as store, store.session() as session:
        rows = session.scalars(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.event_type == event_type)
            .order_by(AuditEventRow.seq)
        ).all()
    return [json.loads(p) for p in rows]


def test_a_2xx_put_is_stored_with_its_audit_event(world: World) -> None:
    answer = world.client.put(
        f"/v1/users/alice/consent/{THIRD}",
        json={"choice": "deny"},
        headers=world.token("alice") | {"X-Request-Id": "req-fast-put"},
    )
    assert answer.status_code == 200, answer.text
    [event] = world.ledger.history("alice")
    assert event.event_id == answer.json()["event_id"]
    assert event.choice.value == "deny"
    assert event.evidence.origin == "PUT /v1/users/{id}/consent/{purpose}"
    [changed] = [p for p in _payloads(world, "consent.changed")
                 if p.get("request_id") == "req-fast-put"]  # fmt: skip
    assert changed["purpose"] == THIRD
    assert changed["choice"] == "deny"


# --- what the fast path takes and what it leaves to the routes ------------------------------


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the fast path passed on a request it should answer")


class _Recorder:
    """An app standing in for the routes: records that it was called and what body reached
    it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _call(
    app: Any,
    world: World,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> list[Message]:
    """Drive `ConsentFastPath(app)` with one request whose body comes in `chunks`."""
    fast = ConsentFastPath(app, services=_services(world))
    scope: Scope = {"type": "http", "method": method, "path": path, "query_string": b"",
                    "root_path": "", "headers": headers, "app": world.client.app}  # fmt: skip
    pending: list[Message] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(fast(scope, receive, send))
    return sent


def _bearer(world: World, who: str, role: str = "user") -> tuple[bytes, bytes]:
    token = issue_token(world.keyring.platform_secret, who, role)  # type: ignore[arg-type]
    return b"authorization", f"Bearer {token}".encode()


_JSON = (b"content-type", b"application/json")


def test_the_fast_path_answers_what_it_takes(world: World) -> None:
    alice = _bearer(world, "alice")
    sent = _call(_no_app, world, "GET", "/v1/users/alice/consent", [alice], [b""])
    assert sent[0]["status"] == 200
    assert sent[0]["headers"] == [(b"content-length", str(len(sent[1]["body"])).encode()),
                                  (b"content-type", b"application/json")]  # fmt: skip
    # A body in several chunks is read whole.
    chunks = [b'{"cho', b'ice": "de', b'ny"}']
    sent = _call(_no_app, world, "PUT", f"/v1/users/alice/consent/{THIRD}", [alice, _JSON],
                 chunks)  # fmt: skip
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["choice"] == "deny"
    admin = _bearer(world, "ops", "admin")
    assert (
        _call(_no_app, world, "GET", "/v1/users/dani/consent", [admin], [b""])[0]["status"] == 200
    )


@pytest.mark.parametrize(
    ("method", "path", "extra", "chunks"),
    [
        ("GET", "/v1/users/alice/consent", [(b"authorization", b"Bearer nope")], [b""]),
        ("GET", "/v1/users/berta/consent", [], [b""]),  # alice's token, berta's consent
        ("PUT", f"/v1/users/alice/consent/{THIRD}", [], [b'{"choice": "maybe"}']),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", [], [b'{"choice": ', b'"deny", "x": 1}']),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", [], [b"[1, 2]"]),
        ("PUT", "/v1/users/alice/consent/nothing", [], [b'{"choice": "deny"}']),
        (
            "PUT",
            f"/v1/users/alice/consent/{THIRD}",
            [(b"x-consentry-shown-policy", b"1999")],
            [b'{"choice": "deny"}'],
        ),
    ],
)
def test_refusals_reach_the_routes_with_the_body_unchanged(
    world: World,
    method: str,
    path: str,
    extra: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> None:
    routes = _Recorder()
    headers = [_bearer(world, "alice"), _JSON, *extra]
    sent = _call(routes, world, method, path, headers, chunks)
    assert sent[0]["status"] == 599
    assert routes.bodies == [b"".join(chunks)]
    assert world.ledger.history("alice") == []


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("GET", "/v1/users/alice/consent", b"", []),
        ("GET", "/v1/users/history/consent", b"", []),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", b"", [(b"authorization", b"x")]),
        ("PUT", "/v1/users/alice/consent/history", b"", [(b"sec-gpc", b"1")]),
        ("GET", f"/v1/users/{'a' * 128}/consent", b"", [(b"accept", b"a"), (b"accept", b"b")]),
    ],
)
def test_what_the_fast_path_takes(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert path.startswith(PREFIX)
    assert wanted({"method": method, "path": path, "query_string": query,
                   "headers": headers}) is not None  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("POST", "/v1/users/alice/consent", b"", []),
        ("HEAD", "/v1/users/alice/consent", b"", []),
        ("GET", "/v1/users/alice/consent", b"at=2025-01-01", []),
        ("GET", "/v1/users/alice/consent/", b"", []),
        ("GET", "/v1/users/alice/consent/history", b"", []),
        ("GET", "/v1/users/alice/signals", b"", []),
        ("GET", "/v1/users//consent", b"", []),
        ("GET", "/v1/users/alice", b"", []),
        ("GET", "/v1/users/a\x00b/consent", b"", []),
        ("GET", f"/v1/users/{'a' * 129}/consent", b"", []),
        ("PUT", "/v1/users/alice/consent", b"", []),
        ("PUT", "/v1/users/alice/consent/", b"", []),
        ("PUT", f"/v1/users/alice/consent/{THIRD}/x", b"", []),
        ("PUT", f"/v1/users/alice/consents/{THIRD}", b"", []),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", b"x=1", []),
        ("GET", "/v1/users/alice/consent", b"", [(b"authorization", b"a")] * 2),
        ("GET", "/v1/users/alice/consent", b"", [(b"sec-gpc", b"1")] * 2),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", b"", [(b"content-type", b"a")] * 2),
        ("PUT", f"/v1/users/alice/consent/{THIRD}", b"", [(b"x-consentry-shown-policy", b"a")] * 2),
    ],
)
def test_what_the_fast_path_leaves_to_the_routes(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert wanted({"method": method, "path": path, "query_string": query,
                   "headers": headers}) is None  # fmt: skip
    assert wanted({"method": method, "path": path, "query_string": query,
                   "headers": headers, "root_path": "/x"}) is None  # fmt: skip


# --- log line, metrics, failures ------------------------------------------------------------


def test_fast_requests_are_logged_and_counted_under_their_route(world: World) -> None:
    get_route = "/v1/users/{user_id}/consent"
    put_route = "/v1/users/{user_id}/consent/{purpose}"
    before = (world.requests_counted(get_route, "GET", "200"),
              world.requests_counted(put_route, "PUT", "200"))  # fmt: skip
    with request_log_lines() as lines:
        get = world.client.get(
            "/v1/users/alice/consent", headers=world.token("alice") | {"X-Request-Id": "r-1"}
        )
        put = world.client.put(f"/v1/users/alice/consent/{THIRD}", json={"choice": "deny"},
                               headers=world.token("alice"))  # fmt: skip
        # The same requests past the fast path: the router names the same routes.
        for method, path in (("GET", "/v1/users/alice/consent"),
                             ("PUT", f"/v1/users/alice/consent/{THIRD}")):  # fmt: skip
            routed = world.client.request(method, path, params={"via": "route"},
                                          json={"choice": "deny"} if method == "PUT" else None,
                                          headers=world.token("alice"))  # fmt: skip
            assert routed.status_code == 200
    assert get.status_code == put.status_code == 200
    assert get.headers["x-request-id"] == "r-1"
    assert (
        lines
        == [
            {"method": "GET", "route": get_route, "status": 200},
            {"method": "PUT", "route": put_route, "status": 200},
        ]
        * 2
    )
    assert "alice" not in str(lines)
    after = (world.requests_counted(get_route, "GET", "200"),
             world.requests_counted(put_route, "PUT", "200"))  # fmt: skip
    assert after == (before[0] + 2, before[1] + 2)


def test_a_failed_commit_is_the_routes_500(
    twins: tuple[World, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(change: object) -> Future[None]:
        future: Future[None] = Future()
        future.set_exception(RuntimeError("the store went away"))
        return future

    for world in twins:
        monkeypatch.setattr(_services(world).committer, "submit", failing)
    fast, _ = _both(twins, "PUT", f"/v1/users/alice/consent/{THIRD}", json_body={"choice": "deny"})
    assert fast.status_code == 500
    assert fast.headers["content-type"] == "application/problem+json"


def test_a_failing_read_is_answered_by_the_routes(tmp_path: Path) -> None:
    # The store cannot be reached: the fast path leaves the GET to the routes, which answer
    # it as every route answers an error nothing handled.
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    client = TestClient(create_app(Settings(home=tmp_path, database_url=unreachable)))
    svc: Services = client.app.state.services  # type: ignore[attr-defined]
    token = issue_token(svc.platform_secret, "alice", "user")
    headers = {"Authorization": f"Bearer {token}", "X-Request-Id": "req-down"}
    fast = client.get("/v1/users/alice/consent", headers=headers)
    routed = client.get("/v1/users/alice/consent", headers=headers, params={"via": "route"})
    assert fast.status_code == routed.status_code == 500
    assert fast.headers.multi_items() == routed.headers.multi_items()
    assert fast.content == routed.content
