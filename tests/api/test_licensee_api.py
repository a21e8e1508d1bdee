"""The licensee API: API-key auth, only one's own deliveries and revocations (every route),
files with HTTP ranges, the signed cursor-paginated feed, and idempotent receipts."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from consentry.delivery.licensees import registry_for
from consentry.keys import Keyring
from consentry.revocation import run_revocations
from consentry.revocation.batches import KEY_ID_HEADER, SIGNATURE_HEADER, verify_batch
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.signing import b64url_decode, verify
from tests.api.conftest import Api, make_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    home = tmp_path_factory.mktemp("licensee-api") / "home"
    home.mkdir()
    return make_api(Settings(home=home))


@pytest.fixture
def fresh_api(settings: Settings) -> Api:
    return make_api(settings)


ROUTES = [
    "/v1/licensee/deliveries",
    "/v1/licensee/deliveries/{alpha}/manifest",
    "/v1/licensee/deliveries/{alpha}/files/part-00000.parquet",
    "/v1/licensee/revocations",
]


def _path(api: Api, route: str) -> str:
    return route.format(alpha=api.deliveries["alpha"])


# -- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_needs_a_valid_active_api_key(api: Api, route: str) -> None:
    path = _path(api, route)
    secret = Keyring.for_home(api.home.settings.home).platform_secret
    user_token = issue_token(secret, "u-us", "user")
    almost = api.keys["alpha"][:-1] + ("A" if api.keys["alpha"][-1] != "A" else "B")
    cases = {
        "": "a licensee API key is required",
        "Basic abc": "a licensee API key is required",
        "Bearer ": "a licensee API key is required",
        f"Bearer {user_token}": "not a licensee API key",
        "Bearer csk_nonsense": "invalid API key",
        f"Bearer {almost}": "invalid API key",
        f"Bearer {api.keys['gone']}": "invalid API key",
    }
    for header, message in cases.items():
        response = api.client.get(path, headers={"Authorization": header} if header else {})
        assert response.status_code == 401, (header, response.text)
        assert message in response.json()["detail"]
        assert "WWW-Authenticate" in response.headers


def test_receipts_need_a_valid_api_key_too(api: Api) -> None:
    response = api.client.post(
        "/v1/licensee/revocations/receipts",
        json={"record_ids": ["0" * 64]},
        headers={"Authorization": "Bearer csk_nonsense"},
    )
    assert response.status_code == 401


# -- deliveries ------------------------------------------------------------------------------


def test_a_licensee_lists_only_its_own_deliveries(api: Api) -> None:
    for name in ("alpha", "beta"):
        body = api.get(name, "/v1/licensee/deliveries").json()
        assert body["licensee"] == name
        assert [d["delivery_id"] for d in body["deliveries"]] == [api.deliveries[name]]


def test_the_manifest_comes_byte_for_byte_with_a_verifiable_signature(api: Api) -> None:
    delivery = api.deliveries["alpha"]
    response = api.get("alpha", f"/v1/licensee/deliveries/{delivery}/manifest")
    assert response.status_code == 200
    on_disk = (api.home.deliveries / delivery / "manifest.json").read_bytes()
    assert response.content == on_disk
    keys = api.client.get("/.well-known/consentry-keys.json").json()
    signature = b64url_decode(response.headers[SIGNATURE_HEADER])
    assert verify(keys, response.content, signature, payload="manifest")
    # A manifest signature is no feed page signature (one key per payload kind).
    assert not verify_batch(keys, response.content, response.headers[SIGNATURE_HEADER])
    (current,) = [k for k in keys["keys"] if "manifest" in k["consentry_current_for"]]
    assert response.headers[KEY_ID_HEADER] == current["kid"]


@pytest.mark.parametrize(
    "suffix", ["/manifest", "/files/manifest.json", "/files/part-00000.parquet"]
)
def test_another_licensees_delivery_is_not_found(api: Api, suffix: str) -> None:
    path = f"/v1/licensee/deliveries/{api.deliveries['alpha']}{suffix}"
    assert api.get("alpha", path).status_code == 200
    response = api.get("beta", path)
    assert response.status_code == 404
    assert "no delivery" in response.json()["detail"]


@pytest.mark.parametrize("delivery_id", ["dlv-nope", "..", "dlv-20250301T000000Z-000000000000"])
def test_unknown_or_malformed_delivery_ids_are_404(api: Api, delivery_id: str) -> None:
    assert api.get("alpha", f"/v1/licensee/deliveries/{delivery_id}/manifest").status_code == 404


@pytest.mark.parametrize("name", ["part-99999.parquet", "..%2Fmanifest.json", ".lineage", "x y"])
def test_only_files_the_manifest_lists_are_served(api: Api, name: str) -> None:
    path = f"/v1/licensee/deliveries/{api.deliveries['alpha']}/files/{name}"
    assert api.get("alpha", path).status_code == 404


def test_files_stream_whole_and_by_range(api: Api) -> None:
    delivery = api.deliveries["alpha"]
    manifest = json.loads((api.home.deliveries / delivery / "manifest.json").read_text())
    part = manifest["files"][0]
    path = f"/v1/licensee/deliveries/{delivery}/files/{part['name']}"
    whole = api.get("alpha", path)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(whole.content).hexdigest() == part["sha256"]
    size = len(whole.content)
    first = api.get("alpha", path, headers={"Range": "bytes=0-99"})
    assert first.status_code == 206
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.content == whole.content[:100]
    rest = api.get("alpha", path, headers={"Range": "bytes=100-"})
    assert rest.status_code == 206
    assert first.content + rest.content == whole.content
    tail = api.get("alpha", path, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206
    assert tail.content == whole.content[-10:]
    beyond = api.get("alpha", path, headers={"Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416


# -- the revocation feed ---------------------------------------------------------------------


def _records(response: Any) -> list[str]:
    return [r["record_id"] for r in json.loads(response.content)["revocations"]]


def test_the_feed_holds_only_the_licensees_own_revocations_and_is_signed(api: Api) -> None:
    keys = api.client.get("/.well-known/consentry-keys.json").json()
    seen: dict[str, set[str]] = {}
    for name in ("alpha", "beta"):
        response = api.feed(name)
        assert response.status_code == 200
        assert verify_batch(keys, response.content, response.headers[SIGNATURE_HEADER])
        assert not verify_batch(keys, response.content + b" ", response.headers[SIGNATURE_HEADER])
        batch = json.loads(response.content)
        assert batch["licensee"] == name
        assert batch["has_more"] is False
        seen[name] = set(_records(response))
    registry = registry_for(api.home.settings)
    try:
        ids = {n: registry.get(n).id for n in ("alpha", "beta")}
    finally:
        registry.store.close()
    for name in ("alpha", "beta"):
        logged = {r for lid, r, _ in api.log() if lid == ids[name]}
        assert seen[name] == logged
        assert logged
    assert not seen["alpha"] & seen["beta"]  # record ids are per-licensee pseudonyms


def test_paging_one_by_one_is_stable_and_complete(api: Api) -> None:
    everything = _records(api.feed("alpha"))
    cursor, paged = "", []
    for _ in range(len(everything) + 1):
        response = api.feed("alpha", cursor, limit=1)
        batch = json.loads(response.content)
        paged += _records(response)
        again = api.feed("alpha", cursor, limit=1)  # at-least-once: same cursor, same page
        assert _records(again) == _records(response)
        cursor = batch["next_cursor"]
        if not batch["has_more"]:
            break
    assert paged == everything
    assert _records(api.feed("alpha", cursor)) == []


def test_new_revocations_appear_after_the_cursor(fresh_api: Api) -> None:
    api = fresh_api
    first = json.loads(api.feed("alpha").content)
    api.home.opt_out("u-jp")
    run_revocations(api.home.settings, "alpha")
    after = json.loads(api.feed("alpha", first["next_cursor"]).content)
    assert len(after["revocations"]) == 1  # u-jp's one post, p12
    assert after["revocations"][0]["reason"] == "consent_denied"
    assert after["revocations"][0]["status"] == "pending"


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        ("!!!", "not a cursor"),
        ("a" * 600, "not a cursor"),
        ("eyJ2IjoxfQ", "not a cursor issued by this server"),
    ],
)
def test_malformed_cursors_are_400(api: Api, cursor: str, message: str) -> None:
    response = api.feed("alpha", cursor)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_a_tampered_or_foreign_cursor_is_400(api: Api) -> None:
    cursor = json.loads(api.feed("beta").content)["next_cursor"]
    response = api.feed("alpha", cursor)
    assert response.status_code == 400
    assert "another licensee" in response.json()["detail"]
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw[10] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    assert api.feed("beta", tampered).status_code == 400


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_limits_out_of_range_are_422(api: Api, limit: int) -> None:
    assert api.feed("alpha", limit=limit).status_code == 422


# -- receipts --------------------------------------------------------------------------------


def test_receipts_confirm_once_and_report_unknown_ids(fresh_api: Api) -> None:
    api = fresh_api
    mine = _records(api.feed("alpha"))
    theirs = _records(api.feed("beta"))
    stranger = "f" * 64
    body = {"record_ids": [mine[0], mine[0], theirs[0], stranger]}
    first = api.receipts("alpha", body)
    assert first.status_code == 200, first.text
    result = first.json()
    assert result["confirmed"] == [mine[0]]
    assert result["already_confirmed"] == []
    assert result["unknown"] == [theirs[0], stranger]
    again = api.receipts("alpha", body).json()
    assert again["confirmed"] == []
    assert again["already_confirmed"] == [mine[0]]
    statuses = {
        r["record_id"]: r["status"] for r in json.loads(api.feed("alpha").content)["revocations"]
    }
    assert statuses[mine[0]] == "confirmed"
    assert all(statuses[r] == "pending" for r in mine[1:])
    # Beta's revocation was not touched by alpha's receipt.
    assert all(
        r["status"] == "pending" for r in json.loads(api.feed("beta").content)["revocations"]
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"record_ids": []}, 422),
        ({"record_ids": ["abc"]}, 422),
        ({"record_ids": ["A" * 64]}, 422),
        ({"record_ids": [5]}, 422),
        ({"record_ids": "0" * 64}, 422),
        ({"ids": ["0" * 64]}, 422),
        ({"record_ids": ["0" * 64], "extra": 1}, 422),
        ([], 422),
    ],
)
def test_malformed_receipts_are_refused_and_change_nothing(
    api: Api, body: Any, status: int
) -> None:
    before = api.log()
    valid = _records(api.feed("alpha"))[0]
    if isinstance(body, dict) and isinstance(body.get("record_ids"), list) and body["record_ids"]:
        body = {**body, "record_ids": [valid, *body["record_ids"]]}  # one good id changes nothing
    response = api.receipts("alpha", body)
    assert response.status_code == status, response.text
    assert response.json()["detail"]
    assert api.log() == before


def test_receipts_must_be_json(api: Api) -> None:
    before = api.log()
    response = api.receipts("alpha", {"record_ids": ["0" * 64]}, **{"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert api.log() == before
