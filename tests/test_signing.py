"""Delivery signing: Ed25519 exactly (RFC 8032), JWK publication, tamper detection."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.errors import BadInput, ConsentryError
from consentry.keys import Keyring
from consentry.signing import (
    Signer,
    b64url_decode,
    b64url_encode,
    key_id,
    public_jwk,
    public_key_from_jwk,
    verify,
)

# RFC 8032 §7.1, TEST 1: empty message.
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


@pytest.fixture
def rfc_signer() -> Signer:
    return Signer(Ed25519PrivateKey.from_private_bytes(RFC_SECRET))


def test_rfc8032_test_vector_1(rfc_signer: Signer) -> None:
    jwk = rfc_signer.public_jwk()
    assert b64url_decode(jwk["x"]) == RFC_PUBLIC
    assert rfc_signer.sign(b"") == RFC_SIGNATURE
    assert verify(jwk, b"", RFC_SIGNATURE)
    assert verify(rfc_signer.public_keys_document(), b"", RFC_SIGNATURE)
    assert not verify(jwk, b"\x00", RFC_SIGNATURE)


def test_keys_document_shape(rfc_signer: Signer) -> None:
    doc = rfc_signer.public_keys_document()
    assert json.loads(json.dumps(doc)) == doc
    (jwk,) = doc["keys"]
    assert set(jwk) == {"kid", "kty", "crv", "x", "use"}
    assert (jwk["kty"], jwk["crv"], jwk["use"]) == ("OKP", "Ed25519", "sig")
    # kid: SHA-256 of the raw public key, first 16 hex digits; x: unpadded base64url.
    assert jwk["kid"] == hashlib.sha256(RFC_PUBLIC).hexdigest()[:16] == rfc_signer.kid
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert "=" not in jwk["x"]


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=512), flip=st.integers(min_value=0))
def test_sign_verify_and_any_tampering_fails(data: bytes, flip: int) -> None:
    signer = Signer(Ed25519PrivateKey.generate())
    doc = signer.public_keys_document()
    signature = signer.sign(data)
    assert len(signature) == 64
    assert verify(doc, data, signature)
    assert verify(doc, data, signature, kid=signer.kid)
    if data:
        i = flip % len(data)
        tampered = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]
        assert not verify(doc, tampered, signature)
    else:
        assert not verify(doc, b"x", signature)
    j = flip % 64
    bad_signature = signature[:j] + bytes([signature[j] ^ 0x80]) + signature[j + 1 :]
    assert not verify(doc, data, bad_signature)
    assert not verify(doc, data, signature[:63])


def test_wrong_key_fails_and_key_sets_match_any_or_the_named_key() -> None:
    ours, theirs = Signer(Ed25519PrivateKey.generate()), Signer(Ed25519PrivateKey.generate())
    signature = ours.sign(b"manifest")
    assert not verify(theirs.public_jwk(), b"manifest", signature)
    both = {"keys": [theirs.public_jwk(), ours.public_jwk()]}
    assert verify(both, b"manifest", signature)
    assert verify(both, b"manifest", signature, kid=ours.kid)
    assert not verify(both, b"manifest", signature, kid=theirs.kid)
    assert not verify(both, b"manifest", signature, kid="0" * 16)
    assert not verify({"keys": []}, b"manifest", signature)


def test_jwk_round_trip() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    jwk = public_jwk(key)
    back = public_key_from_jwk(json.loads(json.dumps(jwk)))
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert back.public_bytes(*raw) == key.public_bytes(*raw)
    assert key_id(back) == jwk["kid"]
    assert b64url_decode(b64url_encode(b"\xfb\xff")) == b"\xfb\xff"


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "RSA", "crv": "Ed25519", "x": "AA"}, "expected kty OKP"),
        ({"kty": "OKP", "crv": "X25519", "x": "AA"}, "expected kty OKP"),
        ({"kty": "OKP", "crv": "Ed25519"}, "has no `x`"),
        ({"kty": "OKP", "crv": "Ed25519", "x": "!!!"}, "not base64url"),
        ({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(b"\x01" * 31)}, "31 bytes"),
        (
            {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(RFC_PUBLIC), "kid": "0" * 16},
            "does not match the key",
        ),
    ],
)
def test_malformed_keys_are_bad_input(jwk: dict[str, str], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        public_key_from_jwk(jwk)
    with pytest.raises(BadInput, match=message):
        verify(jwk, b"", RFC_SIGNATURE)


def test_keys_must_be_a_list() -> None:
    with pytest.raises(BadInput, match="list of JWK"):
        verify({"keys": "nope"}, b"", RFC_SIGNATURE)


def test_home_signing_key_is_created_once_private_and_stable(tmp_path: Path) -> None:
    signer = Signer.for_home(tmp_path)
    path = tmp_path / "keys" / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    again = Signer.from_keyring(Keyring.for_home(tmp_path))
    assert again.kid == signer.kid
    assert path.read_bytes() == pem
    assert verify(again.public_keys_document(), b"data", signer.sign(b"data"))
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]  # no temp files left


def test_a_signing_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "signing.key").write_bytes(
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConsentryError, match="not an Ed25519 key"):
        Signer.for_home(tmp_path)
    (tmp_path / "keys" / "signing.key").write_text("garbage")
    with pytest.raises(ConsentryError, match="not a PEM private key"):
        Signer.for_home(tmp_path)
