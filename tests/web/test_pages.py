"""The demo sign-in, the privacy settings page, policy changes: what a person sees and does."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from consentry.ledger.service import Evidence
from consentry.policy import Choice
from tests.web.conftest import Site
from tests.web.html import Element, accessible_name, parse_html

THIRD = "ai_training_third_party"
FIRST = "ai_training_first_party"
PARTNERS = "business_partners"
PURPOSES = {
    THIRD: "Third-party AI training",
    FIRST: "Grok and X's own AI training",
    PARTNERS: "Sharing with business partners",
}


def _state(doc: Element, purpose: str) -> tuple[str, str]:
    return doc.find(data_state=purpose).text(), doc.find(data_reason=purpose).text()


def _history_rows(doc: Element) -> list[list[str]]:
    table = doc.by_id("history")
    if table is None:
        return []
    return [[td.text() for td in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")]


def _assert_controls_named(doc: Element) -> None:
    """Every visible control has an accessible name (hidden inputs are not controls)."""
    controls = [
        e
        for e in doc.iter()
        if e.tag in ("button", "select", "textarea")
        or (e.tag == "input" and e.attrs.get("type") != "hidden")
    ]
    for control in controls:
        assert accessible_name(doc, control), f"unnamed control: <{control.tag} {control.attrs}>"


def _assert_no_script(doc: Element) -> None:
    assert doc.find_all("script") == []
    assert not [e for e in doc.iter() if any(k.startswith("on") for k in e.attrs)]


# --- sign-in --------------------------------------------------------------------------


def test_signin_lists_demo_users_on_a_demo_home(site: Site) -> None:
    response, doc = site.page("/signin")
    assert response.status_code == 200
    radios = doc.find_all("input", type="radio", name="user_id")
    assert {r.attrs["value"] for r in radios} == {"alice", "berta", "chloe", "dani", "emil"}
    labels = {r.attrs["value"]: accessible_name(doc, r) for r in radios}
    assert labels["berta"] == "berta — in the EU, born 1985-07-09"
    assert labels["chloe"] == "chloe — in the UK, age unknown"
    _assert_controls_named(doc)
    _assert_no_script(doc)


def test_signin_lists_people_in_interesting_states_first(site: Site) -> None:
    """A minor, then (once they exist) a GPC user and an EU user who opted in, labelled;
    then everyone else in region order (tests/demo/test_cycle.py covers the whole list)."""
    site.ledger.record_gpc("emil", evidence=Evidence(origin="test", client="browser"))
    site.ledger.record(
        "berta",
        THIRD,
        Choice.ALLOW,
        source="settings",
        evidence=Evidence(origin="test", client="browser"),
    )
    _, doc = site.page("/signin")
    radios = doc.find_all("input", type="radio", name="user_id")
    labels = [accessible_name(doc, r) for r in radios]
    assert labels[:3] == [
        "dani — in Brazil, born 2012-01-01 (a minor)",
        "emil — in Canada, born 1970-02-02 (Global Privacy Control)",
        "berta — in the EU, born 1985-07-09 (opted in)",
    ]
    assert sorted(r.attrs["value"] for r in radios[3:]) == ["alice", "chloe"]


def test_signin_lists_nobody_without_the_demo_marker(plain_site: Site) -> None:
    response, doc = plain_site.page("/signin")
    assert response.status_code == 200
    assert doc.find_all("input", type="radio") == []
    assert "only when this home holds the generated demo platform" in doc.text()
    assert plain_site.page("/settings/privacy")[0].headers["location"] == "/signin"


def test_signin_is_refused_once_the_demo_marker_is_gone(site: Site) -> None:
    token = site.csrf()
    (site.settings.home / "demo" / "demo.json").unlink()
    refused = site.client.post(
        "/signin", data={"user_id": "alice", "csrf": token}, follow_redirects=False
    )
    assert refused.status_code == 404
    assert "Demo sign-in is not available" in refused.text
    assert site.page("/settings/privacy")[0].headers["location"] == "/signin"


@pytest.mark.parametrize("token", [None, "", "forged-token"])
def test_signin_needs_the_sessions_csrf_token(site: Site, token: str | None) -> None:
    site.csrf()  # the session now holds a token; the form must echo exactly it
    data = {"user_id": "alice"} if token is None else {"user_id": "alice", "csrf": token}
    response = site.client.post("/signin", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert "This form has expired" in response.text
    assert site.page("/settings/privacy")[0].status_code == 303


def test_signin_with_a_token_from_another_session_is_refused(site: Site) -> None:
    other = site.csrf()
    site.client.cookies.clear()
    site.client.get("/signin")  # a fresh session with a token of its own
    response = site.client.post(
        "/signin", data={"user_id": "alice", "csrf": other}, follow_redirects=False
    )
    assert response.status_code == 403
    assert "expired" in response.text


def test_signin_for_an_unknown_user_is_404(site: Site) -> None:
    response = site.client.post(
        "/signin", data={"user_id": "nobody", "csrf": site.csrf()}, follow_redirects=False
    )
    assert response.status_code == 404
    assert "There is no user &#39;nobody&#39;" in response.text


def test_signed_out_visitors_are_sent_to_signin(site: Site) -> None:
    response, _ = site.page("/settings/privacy")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    blind = site.switch(THIRD, "deny")
    assert blind.status_code == 401
    assert site.history("alice") == []


def test_signing_out_ends_the_session(site: Site) -> None:
    site.sign_in("alice")
    assert site.page("/settings/privacy")[0].status_code == 200
    response = site.client.post("/signout", data={"csrf": site.csrf()}, follow_redirects=False)
    assert response.status_code == 303
    assert site.page("/settings/privacy")[0].headers["location"] == "/signin"


# --- the privacy settings page ---------------------------------------------------------


def test_every_purpose_with_its_state_and_reason_for_a_us_adult(site: Site) -> None:
    site.sign_in("alice")
    response, doc = site.page("/settings/privacy")
    assert response.status_code == 200
    sections = doc.find_all("section")
    assert [s.attrs["id"] for s in sections] == [f"purpose-{k}" for k in PURPOSES]
    for key, title in PURPOSES.items():
        section = doc.by_id(f"purpose-{key}")
        assert section is not None
        assert section.find("h3").text() == title
        assert accessible_name(doc, section) == title  # the region is labelled by its title
        # Third-party AI training arrived with 2024-11-15; the other two were already on by
        # default under 2023-09-29, so the page names the version since which they are.
        since = "2024-11-15" if key == THIRD else "2023-09-29"
        assert _state(doc, key) == (
            "On",
            f"On by default since policy {since} — switch it off here.",
        )
        button = section.find("button")
        assert accessible_name(doc, button) == f"Switch off {title}"
        assert section.find("input", name="choice").attrs["value"] == "deny"
    assert "shares your posts and information with other companies" in doc.text()
    assert "You have not changed any setting yet." in doc.text()
    _assert_controls_named(doc)
    _assert_no_script(doc)


def test_eu_adult_is_off_until_opting_in(site: Site) -> None:
    site.sign_in("berta")
    _, doc = site.page("/settings/privacy")
    for key in PURPOSES:
        assert _state(doc, key) == ("Off", "Off: you are in the EU and have not opted in.")
        section = doc.by_id(f"purpose-{key}")
        assert section is not None
        assert section.find("input", name="choice").attrs["value"] == "allow"
        assert accessible_name(doc, section.find("button")).startswith("Switch on ")
    assert "(in the EU)" in doc.text()


def test_unknown_age_in_the_uk_follows_the_regional_default(site: Site) -> None:
    site.sign_in("chloe")
    _, doc = site.page("/settings/privacy")
    assert _state(doc, THIRD) == ("Off", "Off: you are in the UK and have not opted in.")


def test_a_minor_sees_why_and_has_no_switch(site: Site) -> None:
    site.sign_in("dani")
    _, doc = site.page("/settings/privacy")
    for key in PURPOSES:
        assert _state(doc, key) == ("Off", "Off: this is never used for people under 18.")
        section = doc.by_id(f"purpose-{key}")
        assert section is not None
        assert section.find_all("form") == []
        assert section.find_all("button") == []


def test_a_switch_is_recorded_now_and_shown_in_the_history(site: Site) -> None:
    site.sign_in("alice")
    before = datetime.now(UTC)
    response = site.switch(THIRD, "deny")
    assert response.status_code == 303
    assert response.headers["location"] == f"/settings/privacy#purpose-{THIRD}"
    [event] = site.history("alice")
    assert (event.purpose, event.choice, event.source) == (THIRD, Choice.DENY, "settings")
    assert event.policy_version == "2024-11-15"
    assert event.evidence.client == "browser"
    assert event.evidence.shown_version == "2024-11-15"
    assert before - timedelta(seconds=1) <= event.at <= datetime.now(UTC)
    # Effective immediately: the ledger already resolves it off.
    assert site.ledger.resolve("alice", THIRD, datetime.now(UTC)).decision is Choice.DENY

    _, doc = site.page("/settings/privacy")
    state, reason = _state(doc, THIRD)
    assert state == "Off"
    assert reason == f"Off: you switched it off on {event.at.strftime('%-d %B %Y')}."
    assert _state(doc, FIRST)[0] == "On"  # the other purposes are untouched
    notice = doc.by_id("saved-notice")
    assert notice is not None
    assert notice.attrs["role"] == "status"
    assert notice.text() == "Saved: Third-party AI training is now off, from now on."
    assert _history_rows(doc) == [
        [event.at.strftime("%Y-%m-%d %H:%M UTC"), PURPOSES[THIRD], "Off", "this page",
         "2024-11-15"],
    ]  # fmt: skip
    # The notice is shown once.
    assert site.page("/settings/privacy")[1].by_id("saved-notice") is None

    # And back on: newest first in the table.
    assert site.switch(THIRD, "allow").status_code == 303
    _, doc = site.page("/settings/privacy")
    assert _state(doc, THIRD)[0] == "On"
    assert [row[2] for row in _history_rows(doc)] == ["On", "Off"]


@pytest.mark.parametrize(
    ("purpose", "choice", "csrf", "status", "says"),
    [
        ("no_such_purpose", "deny", None, 404, "No such setting"),
        (THIRD, "maybe", None, 422, "That choice is not possible"),
        (THIRD, "deny", "forged", 403, "This form has expired"),
        (THIRD, "deny", "", 403, "This form has expired"),
    ],
)
def test_bad_switches_are_refused_and_change_nothing(
    site: Site, purpose: str, choice: str, csrf: str | None, status: int, says: str
) -> None:
    site.sign_in("alice")
    response = site.switch(purpose, choice, csrf)
    assert response.status_code == status
    assert "text/html" in response.headers["content-type"]
    doc = parse_html(response.text)
    assert doc.find("h1").text() == says
    assert "Nothing was changed" in doc.text() or "did not change anything" in doc.text()
    assert site.history("alice") == []
    assert _state(site.page("/settings/privacy")[1], THIRD)[0] == "On"


def test_a_switch_without_a_choice_is_refused(site: Site) -> None:
    site.sign_in("alice")
    response = site.client.post(
        f"/settings/privacy/{THIRD}", data={"csrf": site.csrf()}, follow_redirects=False
    )
    assert response.status_code == 422
    assert "That choice is not possible" in response.text
    assert site.history("alice") == []


def test_a_purpose_of_an_old_policy_only_cannot_be_switched(site: Site) -> None:
    site.sign_in("alice")
    # Every purpose of 2023-09-29 is still in 2024-11-15; a made-up retired key is not.
    response = site.switch("grok_voice_training", "deny")
    assert response.status_code == 404
    assert site.history("alice") == []


# --- Global Privacy Control ------------------------------------------------------------


def test_gpc_on_a_signed_in_visit_is_recorded_once(site: Site) -> None:
    site.sign_in("emil")
    response, doc = site.page("/settings/privacy", **{"Sec-GPC": "1"})
    assert response.status_code == 200
    events = site.history("emil")
    assert sorted(e.purpose for e in events) == sorted(PURPOSES)
    assert {(e.choice, e.source) for e in events} == {(Choice.DENY, "gpc")}
    assert {e.evidence.origin for e in events} == {"GET /settings/privacy"}
    notice = doc.by_id("gpc-notice")
    assert notice is not None
    assert notice.attrs["role"] == "status"
    assert "Your browser sent a Global Privacy Control signal." in notice.text()
    for title in PURPOSES.values():
        assert title in notice.text()
    for key in PURPOSES:
        state, reason = _state(doc, key)
        assert state == "Off"
        assert reason.startswith("Off: your browser's Global Privacy Control signal asked")
    assert {row[3] for row in _history_rows(doc)} == {"Global Privacy Control"}

    # The second visit with the signal records nothing new and says so.
    _, again = site.page("/settings/privacy", **{"Sec-GPC": "1"})
    assert len(site.history("emil")) == len(PURPOSES)
    notice = again.by_id("gpc-notice")
    assert notice is not None
    assert "We have recorded it before" in notice.text()
    # Without the signal there is no notice, and the recorded choice stays.
    _, plain = site.page("/settings/privacy")
    assert plain.by_id("gpc-notice") is None
    assert _state(plain, THIRD)[0] == "Off"


def test_gpc_never_overrides_a_choice_the_user_made(site: Site) -> None:
    site.sign_in("alice")
    assert site.switch(THIRD, "allow").status_code == 303
    _, doc = site.page("/settings/privacy", **{"Sec-GPC": "1"})
    assert {e.purpose for e in site.history("alice") if e.source == "gpc"} == {FIRST, PARTNERS}
    assert _state(doc, THIRD)[1].startswith("On: you switched it on on ")
    notice = doc.by_id("gpc-notice")
    assert notice is not None
    assert PURPOSES[THIRD] not in notice.text()


def test_gpc_without_a_session_records_nothing(site: Site) -> None:
    response, _ = site.page("/settings/privacy", **{"Sec-GPC": "1"})
    assert response.status_code == 303
    assert site.history("emil") == []
    assert site.history("alice") == []


# --- policy changes ------------------------------------------------------------------


def test_the_policy_changes_link_explains_in_sentences(site: Site) -> None:
    site.sign_in("alice")
    _, doc = site.page("/settings/privacy")
    link = next(a for a in doc.find_all("a") if a.text() == "What changed from 2023-09-29")
    href = link.attrs["href"]
    assert href == "/policy/changes/2023-09-29/2024-11-15"
    response, changes = site.page(href)
    assert response.status_code == 200
    items = [li.text() for li in changes.find("main").find_all("li")]
    assert items[0].startswith("New purpose: Third-party AI training — on by default")
    assert (
        "Scraping more than 1,000,000 posts in any 24 hours now costs USD 15,000 per "
        "1,000,000 posts." in items
    )
    for sentence in items:
        assert sentence[0].isupper()
        assert sentence.endswith(".")
        assert "_" not in sentence  # no policy keys, only words
    _assert_no_script(changes)


def test_unknown_policy_versions_are_a_404_page(site: Site) -> None:
    response, doc = site.page("/policy/changes/2023-09-29/2099-01-01")
    assert response.status_code == 404
    assert doc.find("h1").text() == "No such policy version"


# --- the pages as a whole ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/signin", "/settings/privacy", "/policy/changes/2023-09-29/2024-11-15"]
)
def test_pages_work_without_javascript_and_name_every_control(site: Site, path: str) -> None:
    site.sign_in("alice")
    site.switch(THIRD, "deny")
    response, doc = site.page(path)
    assert response.status_code == 200
    _assert_no_script(doc)
    _assert_controls_named(doc)
    html = doc.find("html")
    assert html.attrs["lang"] == "en"
    assert doc.find("title").text()
    assert len(doc.find_all("h1")) == 1
    assert doc.find("main").attrs["id"] == "main"
    skip = doc.find("a", class_="skip-link")
    assert skip.attrs["href"] == "#main"
    # Every form posts to a real route with the session's token (no script needed).
    for form in doc.find_all("form"):
        assert form.attrs["method"] == "post"
        assert form.attrs["action"].startswith("/")
        assert form.find("input", name="csrf").attrs["value"] == site.csrf()
    # Heading levels never skip (h1 -> h2 -> h3).
    levels = [int(e.tag[1]) for e in doc.iter() if e.tag in ("h1", "h2", "h3", "h4")]
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels))
