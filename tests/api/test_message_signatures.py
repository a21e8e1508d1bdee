"""RFC 9421 signatures of feed pages and receipts, checked by the `http-message-signatures`
library (not Consentry code) against the published key set."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import http_sf
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from consentry.api.message_signatures import FEED_TAG, RECEIPT_TAG
from consentry.settings import Settings
from tests.api.conftest import Api, make_api


class _Jwks(HTTPSignatureKeyResolver):
    """Resolves a `keyid` to a published key of kind `http`."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.keys = {k["kid"]: k for k in jwks["keys"] if "http" in k["consentry_payloads"]}

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        x = self.keys[key_id]["x"]
        return Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4)))

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    home: Path = tmp_path_factory.mktemp("signatures") / "home"
    home.mkdir()
    return make_api(Settings(home=home))


def _verify(api: Api, response: Any, tag: str, body: bytes | None = None) -> None:
    jwks = api.client.get("/.well-known/consentry-keys.json").json()
    verifier = HTTPMessageVerifier(signature_algorithm=algorithms.ED25519, key_resolver=_Jwks(jwks))
    verifier.verify(
        response,
        expect_tag=tag,
        require_components=('"@method";req', '"@target-uri";req', "content-digest"),
        body=response.content if body is None else body,
    )


def test_a_feed_page_verifies_and_names_its_key(api: Api) -> None:
    response = api.feed("alpha")
    assert response.status_code == 200
    _verify(api, response, FEED_TAG)
    signature_input: Any = http_sf.parse(
        response.headers["Signature-Input"].encode(), tltype="dictionary"
    )
    params = signature_input["sig1"][1]
    assert params["alg"] == "ed25519"
    assert isinstance(params["created"], int)
    jwks = api.client.get("/.well-known/consentry-keys.json").json()
    (current,) = [k for k in jwks["keys"] if "http" in k["consentry_current_for"]]
    assert params["keyid"] == current["kid"]


def test_one_changed_body_byte_fails(api: Api) -> None:
    response = api.feed("alpha")
    tampered = bytearray(response.content)
    tampered[len(tampered) // 2] ^= 0x01
    with pytest.raises(InvalidSignature):
        _verify(api, response, FEED_TAG, body=bytes(tampered))


def test_a_feed_signature_is_no_receipt_signature(api: Api) -> None:
    response = api.feed("alpha")
    with pytest.raises(InvalidSignature):
        _verify(api, response, RECEIPT_TAG)


def test_a_page_replayed_for_another_request_fails(api: Api) -> None:
    response = api.feed("alpha", limit=1)
    other = api.feed("alpha", limit=2)
    response.request = other.request  # the same bytes, offered as the answer to another URI
    with pytest.raises(InvalidSignature):
        _verify(api, response, FEED_TAG)


def test_a_receipt_response_verifies(api: Api) -> None:
    response = api.receipts("alpha", {"record_ids": ["0" * 64]})
    assert response.status_code == 200, response.text
    assert response.json()["unknown"] == ["0" * 64]
    _verify(api, response, RECEIPT_TAG)
