"""The public signals' speed without a change of behaviour: the process's answer cache (its
bound across processes, its invalidation within one) and the ASGI fast path (the same
answers as the routes, the same refusals, the same log line and metrics)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.api.public_signals import PREFIX, _wanted
from consentry.engine.lake import Lake
from consentry.errors import ConsentryError
from consentry.ledger.service import Evidence
from consentry.policy import Choice
from consentry.schema import arrow_schema
from consentry.serving.services import Services
from consentry.settings import Settings
from tests.api.conftest import World, make_world, problem_items, request_log_lines
from tests.factories import posts_table, users_table

THIRD = "ai_training_third_party"
AUTHORS = "/v1/public/signals/authors"
POSTS = "/v1/public/signals/posts"
ALLOWED = "train-ai=y"
REFUSED = "train-ai=n"
# A bound long enough that nothing expires during a test unless the test waits for it.
LONG_MS = 600_000


def _services(world: World) -> Services:
    svc: Services = world.client.app.state.services  # type: ignore[attr-defined]
    return svc


def _usage(world: World, author: str) -> str:
    response = world.client.get(f"{AUTHORS}/{author}")
    assert response.status_code == 200, response.text
    return response.headers["content-usage"]


# --- the answer cache ---------------------------------------------------------------------


_OTHER_PROCESS = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from consentry.keys import Keyring
    from consentry.ledger.service import ConsentLedger, Evidence
    from consentry.policy import Choice, load_policy
    from consentry.settings import Settings
    from consentry.store import open_store

    settings = Settings(home=Path(sys.argv[1]))
    store = open_store(settings.resolved_database_url)
    keyring = Keyring.for_home(settings.home)
    ledger = ConsentLedger(store, load_policy(settings.policy_file), keyring)
    print("ready", flush=True)
    sys.stdin.readline()
    ledger.record(sys.argv[2], sys.argv[3], Choice.DENY, source="settings",
                  evidence=Evidence(client="browser"))
    print("done", flush=True)
    """
)


@pytest.fixture
def other_process(settings: Settings) -> Iterator[subprocess.Popen[str]]:
    """A second process on the same home, ready to record alice's opt-out when told."""
    child = subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, str(settings.home), "alice", THIRD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        child.kill()
        child.wait()


def test_an_opt_out_in_another_process_shows_within_the_bound(
    settings: Settings, other_process: subprocess.Popen[str]
) -> None:
    bound = 2.0
    world = make_world(replace(settings, signals_cache_ms=int(bound * 1000)))
    assert other_process.stdout is not None
    assert other_process.stdin is not None
    assert other_process.stdout.readline().strip() == "ready"
    asked = time.monotonic()
    assert _usage(world, "alice") == ALLOWED  # resolved now, reused for up to `bound`
    answered = time.monotonic()
    other_process.stdin.write("go\n")
    other_process.stdin.flush()
    assert other_process.stdout.readline().strip() == "done"
    # This process was not told: within the bound it may still answer from its cache (and
    # does, when the machine is quick enough for this check to fall inside the bound).
    usage = _usage(world, "alice")
    if time.monotonic() < asked + bound:
        assert usage == ALLOWED
    # Once the bound has passed since the answer was resolved, the opt-out is answered.
    time.sleep(max(0.0, answered + bound + 0.01 - time.monotonic()))
    assert _usage(world, "alice") == REFUSED


def test_a_change_this_process_records_is_answered_at_once(settings: Settings) -> None:
    world = make_world(replace(settings, signals_cache_ms=LONG_MS))
    cache = _services(world).signals_cache
    assert _usage(world, "alice") == ALLOWED
    assert _usage(world, "chloe") == REFUSED  # GB: opted out by default
    assert cache.get("alice") is not None
    assert cache.get("chloe") is not None
    # Through the API (the group commit)...
    put = world.client.put(
        f"/v1/users/alice/consent/{THIRD}", json={"choice": "deny"}, headers=world.token("alice")
    )
    assert put.status_code == 200, put.text
    assert _usage(world, "alice") == REFUSED
    # ...only the changed author is dropped...
    assert cache.get("chloe") is not None
    # ...and through any ledger of this process (alice allows again).
    world.ledger.record("alice", THIRD, Choice.ALLOW, source="settings",
                        evidence=Evidence(client="browser"))  # fmt: skip
    assert _usage(world, "alice") == ALLOWED


def test_bulk_writes_are_answered_at_once(settings: Settings) -> None:
    world = make_world(replace(settings, signals_cache_ms=LONG_MS))
    assert _usage(world, "alice") == ALLOWED
    assert _usage(world, "zoe") == "train-ai=n, search=y"  # unknown: the site default
    # alice moves to Germany (opted out by the EU default); zoe joins from the US.
    world.ledger.sync_subjects(
        users_table([("alice", "DE", date(1990, 4, 1)), ("zoe", "US", date(1980, 1, 1))])
    )
    assert _usage(world, "alice") == REFUSED
    assert _usage(world, "zoe") == ALLOWED
    # Imported history: zoe opted out of third-party training an hour ago.
    events = pa.table(
        {
            "event_id": ["ev-1"],
            "user_id": ["zoe"],
            "purpose": [THIRD],
            "choice": ["deny"],
            "at": pa.array([datetime.now(UTC) - timedelta(hours=1)], pa.timestamp("us", "UTC")),
            "source": ["settings"],
        },
        schema=arrow_schema("consent_events"),
    )
    assert world.ledger.import_events(events).events_new == 1
    assert _usage(world, "zoe") == REFUSED


def test_the_bound_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTRY_SIGNALS_CACHE_MS", raising=False)
    assert Settings.from_env().signals_cache_ms == 1000
    monkeypatch.setenv("CONSENTRY_SIGNALS_CACHE_MS", "250")
    assert Settings.from_env().signals_cache_ms == 250
    monkeypatch.setenv("CONSENTRY_SIGNALS_CACHE_MS", "0.5")
    with pytest.raises(ConsentryError, match="CONSENTRY_SIGNALS_CACHE_MS is a whole number of "
                       "milliseconds"):  # fmt: skip
        Settings.from_env()


def test_no_reuse_when_the_bound_is_zero(settings: Settings) -> None:
    world = make_world(replace(settings, signals_cache_ms=0))
    assert _usage(world, "alice") == ALLOWED
    assert len(_services(world).signals_cache) == 0


# --- the fast path ------------------------------------------------------------------------


def _without_request_id(headers: object) -> dict[str, str]:
    found = dict(headers)  # type: ignore[call-overload]
    found.pop("x-request-id")
    return found  # type: ignore[no-any-return]


@pytest.fixture
def posts_world(settings: Settings) -> World:
    world = make_world(settings)
    Lake.of(settings).write_arrow(
        "posts", posts_table([("p1", "alice"), ("p2", "berta"), ("p3", "zoe")])
    )
    return world


def test_the_fast_path_answers_exactly_as_the_routes(posts_world: World) -> None:
    client = posts_world.client
    paths = [f"{AUTHORS}/{a}{m}" for a in ("alice", "berta", "zoe") for m in ("", "/meta")]
    paths += [f"{POSTS}/{p}{m}" for p in ("p1", "p2", "p3", "p404") for m in ("", "/meta")]
    for path in paths:
        # A query string sends a request down the routes; without one, the fast path takes it.
        fast_scope = {"method": "GET", "path": path, "query_string": b"", "headers": []}
        assert _wanted(fast_scope) is not None
        assert _wanted({**fast_scope, "query_string": b"via=route"}) is None
        for method in ("GET", "HEAD"):
            fast = client.request(method, path)
            routed = client.request(method, path, params={"via": "route"})
            assert fast.status_code == routed.status_code == 200, (path, method)
            assert _without_request_id(fast.headers) == _without_request_id(routed.headers)
            assert fast.content == routed.content
            assert fast.headers["x-request-id"] != routed.headers["x-request-id"]
            tag = fast.headers["etag"]
            fast = client.request(method, path, headers={"If-None-Match": tag})
            routed = client.request(method, path, headers={"If-None-Match": tag},
                                    params={"via": "route"})  # fmt: skip
            assert fast.status_code == routed.status_code == 304, (path, method)
            assert _without_request_id(fast.headers) == _without_request_id(routed.headers)
            assert fast.content == routed.content == b""
    head = client.head(f"{AUTHORS}/berta")
    get = client.get(f"{AUTHORS}/berta")
    assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content))
    assert head.content == b""
    # The security headers are on the fast path's answers too.
    assert get.headers["x-content-type-options"] == "nosniff"
    assert get.headers["content-security-policy"].startswith("default-src 'self'")


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("GET", f"{AUTHORS}/alice", b"", []),
        ("HEAD", f"{AUTHORS}/alice/meta", b"", [(b"if-none-match", b'"x"')]),
        ("GET", f"{POSTS}/p1", b"", [(b"host", b"example")]),
    ],
)
def test_what_the_fast_path_takes(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert path.startswith(PREFIX)
    assert _wanted({"method": method, "path": path, "query_string": query,
                    "headers": headers}) is not None  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("POST", f"{AUTHORS}/alice", b"", []),
        ("GET", f"{AUTHORS}/alice", b"x=1", []),
        ("GET", f"{AUTHORS}/alice/", b"", []),
        ("GET", f"{AUTHORS}/alice/other", b"", []),
        ("GET", f"{AUTHORS}/alice/meta/", b"", []),
        ("GET", f"{AUTHORS}//meta", b"", []),
        ("GET", f"{PREFIX}users/alice", b"", []),
        ("GET", f"{AUTHORS}/a\x00b", b"", []),
        ("GET", f"{AUTHORS}/a\x7fb", b"", []),
        ("GET", f"{AUTHORS}/{'a' * 129}", b"", []),
        ("GET", f"{AUTHORS}/alice", b"", [(b"if-none-match", b"*"), (b"if-none-match", b"*")]),
    ],
)
def test_what_the_fast_path_leaves_to_the_routes(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert _wanted({"method": method, "path": path, "query_string": query,
                    "headers": headers}) is None  # fmt: skip


def test_a_bad_id_is_still_a_422_problem(world: World) -> None:
    assert world.client.get(f"{AUTHORS}/{'a' * 128}").status_code == 200
    for path in (f"{AUTHORS}/{'a' * 129}", f"{AUTHORS}/a%00b", f"{POSTS}/a%1fb/meta"):
        response = world.client.get(path)
        assert response.status_code == 422, path
        [(location, _, field, _)] = problem_items(response)
        assert location == "path"
        assert field in ("author_id", "post_id")


def test_fast_path_requests_are_logged_and_counted(world: World) -> None:
    route = AUTHORS + "/{author_id}/meta"
    before = {method: world.requests_counted(route, method, "200") for method in ("GET", "HEAD")}
    with request_log_lines() as lines:
        get = world.client.get(f"{AUTHORS}/berta/meta", headers={"X-Request-Id": "req-sig-1"})
        head = world.client.head(f"{AUTHORS}/berta/meta")
    assert get.headers["x-request-id"] == "req-sig-1"
    assert head.headers["x-request-id"]
    assert lines == [
        {"method": "GET", "route": route, "status": 200},
        {"method": "HEAD", "route": route, "status": 200},
    ]
    assert "berta" not in str(lines)
    assert world.requests_counted(route, "GET", "200") == before["GET"] + 1
    assert world.requests_counted(route, "HEAD", "200") == before["HEAD"] + 1


def test_a_failing_lookup_is_answered_by_the_routes(tmp_path: Path) -> None:
    # The store cannot be reached: the fast path leaves the request to the routes, which
    # answer it as every route answers an error nothing handled.
    unreachable = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    client = TestClient(create_app(Settings(home=tmp_path, database_url=unreachable)))
    fast = client.get(f"{AUTHORS}/alice")
    routed = client.get(f"{AUTHORS}/alice", params={"via": "route"})
    assert fast.status_code == routed.status_code == 500
    assert fast.headers["content-type"] == routed.headers["content-type"]
    assert fast.json()["request_id"] == fast.headers["x-request-id"]
    assert {**fast.json(), "request_id": ""} == {**routed.json(), "request_id": ""}
