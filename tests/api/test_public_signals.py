"""The public signals endpoint: per author and per post, no token, headers and JSON or HTML
meta, ETag / 304 / HEAD, a cache bound no longer than the revocation SLA, and nothing but
the preference revealed."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import http_sf
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from consentry.engine.lake import Lake
from consentry.ledger.service import Evidence
from consentry.ledger.signals import answer_lifetimes, cache_max_age, reuse_seconds
from consentry.policy import Choice, Duration
from consentry.serving.services import Services
from consentry.settings import Settings
from tests.api.conftest import World, make_world
from tests.factories import posts_table

THIRD = "ai_training_third_party"
AUTHORS = "/v1/public/signals/authors"
POSTS = "/v1/public/signals/posts"
TDM_POLICY = "http://testserver/policies/tdm.json"
REFUSED = {
    "content-usage": "train-ai=n",
    "tdm-reservation": "1",
    "tdm-policy": TDM_POLICY,
    "x-robots-tag": "noai, noimageai",
}
SIGNAL_FIELDS = ("content-usage", "tdm-reservation", "tdm-policy", "x-robots-tag")


def _fields(headers: object) -> dict[str, str]:
    return {k: v for k, v in dict(headers).items() if k in SIGNAL_FIELDS}  # type: ignore[call-overload]


def _services(world: World) -> Services:
    svc: Services = world.client.app.state.services  # type: ignore[attr-defined]
    return svc


def test_an_authors_signals_as_headers_and_json(world: World) -> None:
    # alice (US adult): AI training allowed by default; berta (DE): denied by the EU default.
    alice = world.client.get(f"{AUTHORS}/alice")
    assert alice.status_code == 200
    assert _fields(alice.headers) == {"content-usage": "train-ai=y"}
    assert alice.json() == {
        "content_usage": "train-ai=y",
        "aipref": {"train-ai": "y"},
        "tdm_reservation": 0,
        "tdm_policy": None,
        "x_robots_tag": None,
    }
    berta = world.client.get(f"{AUTHORS}/berta")
    assert _fields(berta.headers) == REFUSED
    assert berta.json() == {
        "content_usage": "train-ai=n",
        "aipref": {"train-ai": "n"},
        "tdm_reservation": 1,
        "tdm_policy": TDM_POLICY,
        "x_robots_tag": "noai, noimageai",
    }
    # A structured-field parser reads Content-Usage.
    usage = http_sf.parse(berta.headers["content-usage"].encode(), tltype="dictionary")
    assert isinstance(usage, dict)
    assert {k: str(v[0]) for k, v in usage.items() if isinstance(v, tuple)} == {"train-ai": "n"}
    assert len(usage) == 1


def test_only_the_preference_is_revealed(world: World) -> None:
    # dani is a minor, chloe has no birth date: the answer says neither, nor any region,
    # reason, rule, purpose or instant; a stranger answers in the same shape.
    for author in ("dani", "chloe", "berta", "zoe"):
        body = world.client.get(f"{AUTHORS}/{author}").json()
        assert set(body) == {"content_usage", "aipref", "tdm_reservation", "tdm_policy",
                             "x_robots_tag"}  # fmt: skip
        text = world.client.get(f"{AUTHORS}/{author}").text.lower()
        for secret in ("minor", "age", "region", "de", "gb", "rule", "since", "purpose"):
            assert f'"{secret}' not in text


def test_an_unknown_author_gets_the_site_default(world: World) -> None:
    stranger = world.client.get(f"{AUTHORS}/zoe")
    assert stranger.status_code == 200
    assert _fields(stranger.headers) == {**REFUSED, "content-usage": "train-ai=n, search=y"}
    robots = world.client.get("/robots.txt").text
    assert "Content-Usage: / train-ai=n, search=y" in robots


def test_an_opt_out_is_answered_at_once(world: World) -> None:
    assert world.client.get(f"{AUTHORS}/alice").headers["content-usage"] == "train-ai=y"
    world.ledger.record(
        "alice", THIRD, Choice.DENY, source="settings", evidence=Evidence(client="browser")
    )
    assert _fields(world.client.get(f"{AUTHORS}/alice").headers) == REFUSED


def test_etag_304_and_head(world: World) -> None:
    first = world.client.get(f"{AUTHORS}/berta")
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)  # strong: no W/ prefix
    assert world.client.get(f"{AUTHORS}/berta").headers["etag"] == etag
    # Same preferences, same tag (the tag is of the header fields, not of the author).
    assert world.client.get(f"{AUTHORS}/dani").headers["etag"] == etag
    assert world.client.get(f"{AUTHORS}/alice").headers["etag"] != etag
    # The HTML representation has a tag of its own.
    assert world.client.get(f"{AUTHORS}/berta/meta").headers["etag"] != etag

    for given_tags in (etag, f'"x", {etag}', f"W/{etag}", "*"):
        cached = world.client.get(f"{AUTHORS}/berta", headers={"If-None-Match": given_tags})
        assert cached.status_code == 304, given_tags
        assert cached.content == b""
        assert _fields(cached.headers) == REFUSED
        assert cached.headers["etag"] == etag
    stale = world.client.get(f"{AUTHORS}/alice", headers={"If-None-Match": etag})
    assert stale.status_code == 200

    head = world.client.head(f"{AUTHORS}/berta")
    assert head.status_code == 200
    assert head.content == b""
    for name in (*SIGNAL_FIELDS, "etag", "cache-control", "content-type", "content-length"):
        assert head.headers[name] == first.headers[name], name


def test_cache_control_never_outlives_the_revocation_sla(world: World) -> None:
    # Configured 300 s: that is the bound (the shipped SLA is 30 days).
    assert world.client.get(f"{AUTHORS}/alice").headers["cache-control"] == ("public, max-age=300")


def test_a_configured_max_age_beyond_the_sla_is_cut_to_it(settings: Settings) -> None:
    world = make_world(replace(settings, signals_max_age=10**9))
    svc = _services(world)
    now = datetime.now(UTC)
    sla = int(svc.policy.revocation_sla_at(now).to_timedelta().total_seconds())
    assert sla == 30 * 86_400
    answer = world.client.get(f"{AUTHORS}/alice").headers["cache-control"]
    assert answer == f"public, max-age={sla}"


@given(
    configured=st.integers(0, 10**9),
    months=st.integers(0, 3),
    days=st.integers(0, 40),
    at=st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_cache_max_age_is_the_smaller_bound(
    configured: int, months: int, days: int, at: datetime
) -> None:
    assume(months or days)
    sla = Duration.parse(f"{months} months {days} days")
    seconds = cache_max_age(configured, sla, at)
    deadline = sla.add_to(at)
    assert 0 <= seconds <= configured
    assert at + timedelta(seconds=seconds) <= deadline
    assert seconds == configured or at + timedelta(seconds=seconds) == deadline


@given(
    bound_ms=st.integers(0, 10**7),
    configured=st.integers(0, 10**8),
    months=st.integers(0, 3),
    days=st.integers(0, 40),
    at=st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_a_process_reuses_an_answer_no_longer_than_a_cache_may_keep_it(
    bound_ms: int, configured: int, months: int, days: int, at: datetime
) -> None:
    assume(months or days)
    sla = Duration.parse(f"{months} months {days} days")
    max_age = cache_max_age(configured, sla, at)
    reuse = reuse_seconds(bound_ms, max_age, sla, at)
    assert 0 <= reuse <= bound_ms / 1000
    assert reuse <= max_age
    # Reused by the process, then kept by a cache in front for max-age: still by the SLA.
    assert at + timedelta(seconds=reuse + max_age) <= sla.add_to(at)
    # The bound is given up only where one of the other two rules needs it.
    deadline = (sla.add_to(at) - at).total_seconds()
    assert reuse == min(bound_ms / 1000, max_age, deadline - max_age)


@given(
    bound_ms=st.integers(0, 10**7),
    configured=st.integers(0, 10**8),
    months=st.integers(0, 3),
    days=st.integers(0, 40),
    at=st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_answer_lifetimes_are_max_age_and_reuse_of_one_instant(
    bound_ms: int, configured: int, months: int, days: int, at: datetime
) -> None:
    assume(months or days)
    sla = Duration.parse(f"{months} months {days} days")
    max_age = cache_max_age(configured, sla, at)
    assert answer_lifetimes(configured, bound_ms, sla, at) == (
        max_age,
        reuse_seconds(bound_ms, max_age, sla, at),
    )


def test_html_meta_for_templates(world: World) -> None:
    berta = world.client.get(f"{AUTHORS}/berta/meta")
    assert berta.status_code == 200
    assert berta.headers["content-type"] == "text/html; charset=utf-8"
    assert berta.text.splitlines() == [
        '<meta name="tdm-reservation" content="1">',
        f'<meta name="tdm-policy" content="{TDM_POLICY}">',
        '<meta name="robots" content="noai, noimageai">',
    ]
    assert _fields(berta.headers) == REFUSED
    alice = world.client.get(f"{AUTHORS}/alice/meta")
    assert alice.status_code == 200
    assert alice.text == ""


@pytest.fixture
def posts_world(settings: Settings) -> World:
    world = make_world(settings)
    Lake.of(settings).write_arrow(
        "posts", posts_table([("p1", "alice"), ("p2", "berta"), ("p3", "zoe")])
    )
    return world


def test_a_posts_signals_are_its_authors(posts_world: World) -> None:
    client = posts_world.client
    for post, author in (("p1", "alice"), ("p2", "berta"), ("p3", "zoe")):
        by_post = client.get(f"{POSTS}/{post}")
        by_author = client.get(f"{AUTHORS}/{author}")
        assert by_post.status_code == 200
        assert _fields(by_post.headers) == _fields(by_author.headers)
        assert by_post.json() == by_author.json()
        assert by_post.headers["etag"] == by_author.headers["etag"]
        assert (
            client.get(f"{POSTS}/{post}/meta").text == client.get(f"{AUTHORS}/{author}/meta").text
        )
    # A post the lake does not hold (not imported yet): the site default.
    missing = client.get(f"{POSTS}/p404")
    assert _fields(missing.headers) == _fields(client.get(f"{AUTHORS}/zoe").headers)


def test_a_new_posts_snapshot_is_picked_up(posts_world: World) -> None:
    svc = _services(posts_world)
    svc.post_authors.recheck_seconds = 0
    client = posts_world.client
    assert client.get(f"{POSTS}/p9").headers["content-usage"] == "train-ai=n, search=y"
    Lake(posts_world.settings.lake_dir).write_arrow("posts", posts_table([("p9", "alice")]))
    assert client.get(f"{POSTS}/p9").headers["content-usage"] == "train-ai=y"
