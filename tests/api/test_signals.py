"""Public preference signals (robots.txt, TDMRep, GPC, RSL), `Content-Usage` on a platform's
own responses, and the pure rules that derive AIPREF, Bluesky intents and TDMRep."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import http_sf
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Scope

from consentry.api.app import create_app
from consentry.api.signals import ContentUsageMiddleware, content_usage_for
from consentry.ledger.service import Evidence
from consentry.ledger.signals import (
    AiprefValue,
    AuthorSignals,
    PurposeState,
    aipref_header,
    aipref_preferences,
    author_header_fields,
    bluesky_intents,
    meta_tags,
    signals_etag,
    tdmrep_reservation,
)
from consentry.policy import AIPREF_CATEGORIES, Choice
from consentry.serving.services import Services
from consentry.settings import Settings
from tests.api.conftest import World

THIRD = "ai_training_third_party"
FIRST = "ai_training_first_party"
RSL = "{https://rslstandard.org/rsl}"
POLICY_START = datetime(2024, 11, 15, tzinfo=UTC)


def _dictionary(value: str) -> dict[str, str]:
    """Parse an RFC 9651 dictionary whose members are all bare tokens `y` or `n`."""
    parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    assert isinstance(parsed, dict)
    out = {}
    for key, member in parsed.items():
        assert isinstance(member, tuple), f"{key}: an inner list is not a preference"
        item, params = member
        assert isinstance(item, http_sf.Token), f"{key}: {item!r} is not a token"
        assert params == {}
        assert str(item) in ("y", "n")
        out[key] = str(item)
    return out


def _choose(world: World, user_id: str, purpose: str, choice: Choice) -> None:
    world.ledger.record(
        user_id, purpose, choice, source="settings", evidence=Evidence(client="browser")
    )


# --- well-known documents ------------------------------------------------------------


def _content_usage_rules(robots: str) -> list[tuple[str | None, str]]:
    """(path or None, preference) of every Content-Usage rule, read as
    draft-ietf-aipref-attach-05 "Processing Content-Usage Rules" says: the label, SP/HTAB
    ignored around it and the colon, the value up to CR, LF or `#`; a value starting with
    `/` begins with a path that ends at the first SP or HTAB."""
    rules: list[tuple[str | None, str]] = []
    for line in robots.splitlines():
        label, colon, rest = line.partition(":")
        if not colon or label.strip(" \t").lower() != "content-usage":
            continue
        value = rest.split("#", 1)[0].strip(" \t")
        if value.startswith("/"):
            path, preference = re.split(r"[ \t]", value, maxsplit=1)
            rules.append((path, preference.strip(" \t")))
        else:
            rules.append((None, value))
    return rules


def test_robots_txt_carries_content_usage_and_license(world: World) -> None:
    response = world.client.get("/robots.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    rules = _content_usage_rules(response.text)
    # Every rule names its path; the site-wide one covers every crawlable path.
    assert [(path, _dictionary(value)) for path, value in rules] == [
        ("/", {"train-ai": "n", "search": "y"})
    ]
    # /settings/ may not be crawled, so it carries no preference (attach-05).
    assert "Disallow: /settings/" in lines
    assert not any(path and path.startswith("/settings") for path, _ in rules)
    licences = [line.split(":", 1)[1].strip() for line in lines if line.startswith("License:")]
    assert licences == ["http://testserver/license.xml"]
    assert "User-Agent: *" in lines
    assert "# Policy version in force: 2024-11-15" in lines


def test_tdmrep_reserves_everything_and_points_at_an_odrl_policy(world: World) -> None:
    body = world.client.get("/.well-known/tdmrep.json").json()
    assert body == [
        {
            "location": "/",
            "tdm-reservation": 1,
            "tdm-policy": "http://testserver/policies/tdm.json",
        }
    ]
    response = world.client.get(body[0]["tdm-policy"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/ld+json"
    policy = response.json()
    # TDMRep "Expressing a TDM Policy": an ODRL Offer with the TDMRep profile.
    assert policy["@context"] == [
        "http://www.w3.org/ns/odrl.jsonld",
        "http://www.w3.org/ns/tdmrep.jsonld",
    ]
    assert policy["@type"] == "Offer"
    assert policy["profile"] == "http://www.w3.org/ns/tdmrep"
    assert policy["uid"] == "http://testserver/policies/tdm.json"
    assert policy["assigner"]["uid"] == "http://testserver"
    assert policy["assigner"]["vcard:hasURL"] == "http://testserver/policy"
    (permission,) = policy["permission"]
    assert permission["action"] == "tdm:mine"
    assert permission["target"] == "http://testserver/"
    assert [d["action"] for d in permission["duty"]] == ["obtainConsent", "compensate"]
    assert "prohibition" not in policy
    assert "obligation" not in policy


def test_gpc_support_resource(world: World) -> None:
    response = world.client.get("/.well-known/gpc.json")
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {"gpc": True, "lastUpdate": "2024-11-15"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["lastUpdate"])


def test_rsl_license_parses_and_states_the_terms(world: World) -> None:
    response = world.client.get("/license.xml")
    assert response.headers["content-type"].startswith("application/rsl+xml")
    root = ET.fromstring(response.content)
    assert root.tag == f"{RSL}rsl"
    [content] = root.findall(f"{RSL}content")
    assert content.get("url") == "http://testserver/"
    assert content.get("server") is None  # no licence server configured: none named
    licences = content.findall(f"{RSL}license")
    training = [
        lic
        for lic in licences
        if any(
            p.get("type") == "usage" and (p.text or "").strip() == "ai-train"
            for p in lic.findall(f"{RSL}permits")
        )
    ]
    assert len(training) == 1
    payment = training[0].find(f"{RSL}payment")
    assert payment is not None
    assert payment.get("type") == "training"
    # The scraping clause: USD 15,000 per 1,000,000 posts as a `crawl` payment.
    amounts = [
        (payment.get("type"), amount.get("currency"), (amount.text or "").strip())
        for lic in licences
        for payment in lic.findall(f"{RSL}payment")
        for amount in payment.findall(f"{RSL}amount")
    ]
    assert amounts == [("crawl", "USD", "15000")]
    assert "1,000,000 posts" in response.text


def test_rsl_names_a_licence_server_only_when_one_is_configured(world: World) -> None:
    server = "https://licensing.example/olp"
    configured = Settings(home=world.settings.home, license_server=server)
    with TestClient(create_app(configured)) as client:
        root = ET.fromstring(client.get("/license.xml").content)
    [content] = root.findall(f"{RSL}content")
    assert content.get("server") == server
    assert content.get("url") == "http://testserver/"


# --- Content-Usage on the platform's own responses --------------------------------------


def _platform(svc: Services) -> TestClient:
    """A tiny platform app: `/posts/{author}/{id}` serves one author's post."""

    async def post(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"a post by {request.path_params['author']}")

    async def about(request: Request) -> PlainTextResponse:
        return PlainTextResponse("about us")

    def author_of(scope: Scope) -> str | None:
        parts = scope["path"].strip("/").split("/")
        return parts[1] if len(parts) == 3 and parts[0] == "posts" else None

    app = Starlette(
        routes=[Route("/posts/{author}/{post_id}", post), Route("/about", about)],
        middleware=[Middleware(ContentUsageMiddleware, services=svc, author_of=author_of)],
    )
    return TestClient(app)


def _services(world: World) -> Services:
    svc: Services = world.client.app.state.services  # type: ignore[attr-defined]
    return svc


def _tdm_fields(headers: Any) -> tuple[int, str] | None:
    """(tdm-reservation, tdm-policy) parsed as RFC 9651 items, or None when absent."""
    if "tdm-reservation" not in headers:
        assert "tdm-policy" not in headers
        return None
    reservation = http_sf.parse(headers["tdm-reservation"].encode(), tltype="item")
    policy = http_sf.parse(headers["tdm-policy"].encode(), tltype="item")
    assert isinstance(reservation, tuple)
    assert isinstance(policy, tuple)
    assert reservation[1] == policy[1] == {}
    assert isinstance(reservation[0], int)
    assert isinstance(policy[0], http_sf.Token)  # an absolute URL is a valid sf-token
    return reservation[0], str(policy[0])


def test_middleware_states_each_authors_preferences(world: World) -> None:
    platform = _platform(_services(world))
    reserved = (1, "http://testserver/policies/tdm.json")
    # Shipped policy: both AI-training purposes -> train-ai; business partners -> none.
    defaulted = platform.get("/posts/alice/1")
    assert defaulted.status_code == 200
    assert defaulted.text == "a post by alice"
    assert _dictionary(defaulted.headers["content-usage"]) == {"train-ai": "y"}
    assert defaulted.headers["content-usage"] == "train-ai=y"
    # Training allowed: no TDMRep header (the site-wide tdmrep.json reservation stands).
    assert _tdm_fields(defaulted.headers) is None
    assert "x-robots-tag" not in defaulted.headers

    # Switching off third-party training alone: any `n` wins.
    _choose(world, "alice", THIRD, Choice.DENY)
    alice = platform.get("/posts/alice/1").headers
    assert _dictionary(alice["content-usage"]) == {"train-ai": "n"}
    assert _tdm_fields(alice) == reserved
    assert alice["x-robots-tag"] == "noai, noimageai"
    _choose(world, "alice", FIRST, Choice.DENY)
    assert platform.get("/posts/alice/2").headers["content-usage"] == "train-ai=n"

    # The EU default and a minor: off without any choice, rights reserved.
    for author in ("berta", "dani"):
        headers = platform.get(f"/posts/{author}/1").headers
        assert _dictionary(headers["content-usage"]) == {"train-ai": "n"}
        assert _tdm_fields(headers) == reserved


def test_no_header_when_the_response_is_not_an_authors_content(world: World) -> None:
    platform = _platform(_services(world))
    about = platform.get("/about")
    assert about.status_code == 200
    assert "content-usage" not in about.headers
    assert _tdm_fields(about.headers) is None
    assert "x-robots-tag" not in about.headers


def test_an_unknown_author_gets_the_site_default(world: World) -> None:
    platform = _platform(_services(world))
    # An author the ledger was never told about: what robots.txt and tdmrep.json say for
    # every path, restated on the page (no guess about the stranger's own choice).
    stranger = platform.get("/posts/zoe/1")
    assert stranger.status_code == 200
    assert _dictionary(stranger.headers["content-usage"]) == {"train-ai": "n", "search": "y"}
    assert _tdm_fields(stranger.headers) == (1, "http://testserver/policies/tdm.json")
    assert stranger.headers["x-robots-tag"] == "noai, noimageai"
    robots = world.client.get("/robots.txt").text
    assert ("/", stranger.headers["content-usage"]) in _content_usage_rules(robots)
    assert content_usage_for(_services(world), "zoe") == "train-ai=n, search=y"


def test_content_usage_for_reads_the_past(world: World) -> None:
    svc = _services(world)
    # Before 2024-11-15 only X's own training existed (train-ai), on for alice.
    assert content_usage_for(svc, "alice", datetime(2024, 6, 1, tzinfo=UTC)) == "train-ai=y"
    # Before the first policy version nothing is in force: every purpose is unknown.
    assert content_usage_for(svc, "alice", datetime(2020, 1, 1, tzinfo=UTC)) == ""


def test_user_signals_endpoint_derives_tdmrep_and_intents(world: World) -> None:
    body = world.client.get("/v1/users/alice/signals", headers=world.token("alice")).json()
    assert body["content_usage"] == "train-ai=y"
    assert body["tdm_reservation"] == 0
    assert body["intents"] == {
        "syntheticContentGeneration": {"allow": True, "updatedAt": "2024-11-15T00:00:00Z"},
        "bulkDataset": {"allow": True, "updatedAt": "2024-11-15T00:00:00Z"},
    }
    berta = world.client.get("/v1/users/berta/signals", headers=world.token("berta")).json()
    assert berta["tdm_reservation"] == 1
    assert berta["intents"]["bulkDataset"]["allow"] is False


# --- the pure rules --------------------------------------------------------------------

_categories = st.lists(
    st.sampled_from([*AIPREF_CATEGORIES, "made-up-category"]), unique=True, max_size=4
)
_states = st.lists(
    st.builds(
        PurposeState,
        purpose=st.sampled_from(["p1", "p2", "p3", "p4"]),
        decision=st.sampled_from(list(Choice)),
        aipref=_categories.map(tuple),
        since=st.none() | st.datetimes(timezones=st.just(UTC)),
    ),
    max_size=8,
)


@given(states=_states, data=st.data())
def test_aipref_conflicts_any_n_wins_and_unknown_is_omitted(
    states: list[PurposeState], data: st.DataObject
) -> None:
    preferences = aipref_preferences(states)
    for category in AIPREF_CATEGORIES:
        votes = {s.decision for s in states if category in s.aipref}
        if not votes:
            assert category not in preferences
        elif Choice.DENY in votes:
            assert preferences[category] == "n"
        else:
            assert preferences[category] == "y"
    # Only the vocabulary's categories, in its order; the order of purposes does not matter.
    assert list(preferences) == [c for c in AIPREF_CATEGORIES if c in preferences]
    assert aipref_preferences(data.draw(st.permutations(states))) == preferences
    # The header is a valid RFC 9651 dictionary that says exactly the same.
    header = aipref_header(preferences)
    assert (_dictionary(header) if header else {}) == preferences


@given(states=_states)
def test_tdmrep_reserves_unless_training_is_allowed(states: list[PurposeState]) -> None:
    preferences = aipref_preferences(states)
    expected = 0 if preferences.get("train-ai") == "y" else 1
    assert tdmrep_reservation(preferences) == expected


def test_tdmrep_examples() -> None:
    assert tdmrep_reservation({"train-ai": "y"}) == 0
    assert tdmrep_reservation({"train-ai": "n", "search": "y"}) == 1
    assert tdmrep_reservation({"search": "y"}) == 1  # unknown training: reserved


def _at(day: int) -> datetime:
    return POLICY_START + timedelta(days=day)


def test_bluesky_intents_follow_train_ai() -> None:
    allowed = [
        PurposeState(THIRD, Choice.ALLOW, ("train-ai",), _at(3)),
        PurposeState(FIRST, Choice.ALLOW, ("train-ai",), _at(7)),
        PurposeState("business_partners", Choice.DENY, (), _at(30)),  # no category: ignored
    ]
    expected: dict[str, Any] = {"allow": True, "updatedAt": "2024-11-22T00:00:00Z"}
    assert bluesky_intents(allowed) == {
        "syntheticContentGeneration": expected,
        "bulkDataset": expected,
    }
    denied = [allowed[0], PurposeState(FIRST, Choice.DENY, ("train-ai",), _at(1))]
    intents = bluesky_intents(denied)
    assert intents["bulkDataset"] == {"allow": False, "updatedAt": "2024-11-18T00:00:00Z"}
    # No `since` known: the intent carries no updatedAt rather than a made-up one.
    assert bluesky_intents([PurposeState(THIRD, Choice.DENY, ("train-ai",), None)]) == {
        "syntheticContentGeneration": {"allow": False},
        "bulkDataset": {"allow": False},
    }
    # Nothing about training: every intent is unknown (left out), as the proposal allows.
    assert bluesky_intents([PurposeState(FIRST, Choice.ALLOW, ("search",), _at(1))]) == {}
    assert bluesky_intents([]) == {}


@given(states=_states)
def test_bluesky_intents_agree_with_aipref(states: list[PurposeState]) -> None:
    intents = bluesky_intents(states)
    train = aipref_preferences(states).get("train-ai")
    assert set(intents) <= {"syntheticContentGeneration", "bulkDataset"}
    if train is None:
        assert intents == {}
    else:
        for key in ("syntheticContentGeneration", "bulkDataset"):
            assert intents[key]["allow"] is (train == "y")
            stamp = intents[key].get("updatedAt")
            if stamp is not None:
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", stamp)


@given(
    base=st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30),
    reserved=st.booleans(),
)
def test_meta_tags_state_the_header_fields_escaped(base: str, reserved: bool) -> None:
    preferences: dict[str, AiprefValue] = {"train-ai": "n" if reserved else "y"}
    signals = AuthorSignals(aipref_header(preferences), preferences, {}, int(reserved))
    fields = author_header_fields(signals, base)
    snippet = meta_tags(fields)
    if not reserved:
        assert snippet == ""
        return
    root = ET.fromstring(f"<head>{snippet.replace('>', '/>')}</head>")
    assert [(m.get("name"), m.get("content")) for m in root] == [
        ("tdm-reservation", "1"),
        ("tdm-policy", f"{base.rstrip('/')}/policies/tdm.json"),
        ("robots", "noai, noimageai"),
    ]
    # The tag follows the fields and the representation, nothing else.
    assert signals_etag(fields, "json") == signals_etag(list(fields), "json")
    assert signals_etag(fields, "json") != signals_etag(fields, "html")
    assert signals_etag(fields, "json") != signals_etag(fields[:-1], "json")
