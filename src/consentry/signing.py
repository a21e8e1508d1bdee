"""Ed25519 signatures over delivery manifests, and the public keys that check them.

Each kind of payload has its own key (`consentry.delivery.keyset`); `Signer.for_home` is the
log's key, `<home>/keys/signing.key` (PEM, PKCS#8, mode 0600, created by `consentry init`
or on first use). Licensees fetch the public keys, with their history, as a JWK set from
`/.well-known/consentry-keys.json` and check `manifest.sig`
against `manifest.json` with any Ed25519 implementation (RFC 8032, pure Ed25519: the
signature is over the manifest bytes themselves, no pre-hash).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from consentry.errors import BadInput, Problem
from consentry.keys import Keyring

__all__ = [
    "KEYS_DOCUMENT_PATH",
    "Signer",
    "b64url_decode",
    "b64url_encode",
    "key_id",
    "public_jwk",
    "public_key_from_jwk",
    "verify",
]

KEYS_DOCUMENT_PATH: Final = "/.well-known/consentry-keys.json"
"""Where the API serves the key set (`consentry.delivery.keyset.KeySet.jwks`)."""

_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2, as JWKs use it)."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    """The bytes of unpadded (or padded) base64url text; ValueError when it is not."""
    raw = text.rstrip("=")
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), altchars=b"-_", validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from None


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's `kid`: SHA-256 of the raw 32-byte public key, first 16 hex digits."""
    return hashlib.sha256(public_key.public_bytes(_RAW, _RAW_PUBLIC)).hexdigest()[:16]


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 8037 OKP key): kid, kty, crv, x, use."""
    return {
        "kid": key_id(public_key),
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url_encode(public_key.public_bytes(_RAW, _RAW_PUBLIC)),
        "use": "sig",
    }


def _bad_key(message: str) -> BadInput:
    return BadInput(Problem(location="public key", row=None, field=None, message=message))


def public_key_from_jwk(jwk: Mapping[str, Any]) -> Ed25519PublicKey:
    """The Ed25519 public key a JWK describes.

    1. `kty` must be `OKP` and `crv` `Ed25519`; `x` base64url of exactly 32 bytes.
    2. If the JWK has a `kid`, it must match the key (a mislabelled key is refused rather
       than silently trusted under another name).
    3. Anything else is BadInput.
    """
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise _bad_key(
            f"expected kty OKP and crv Ed25519, got {jwk.get('kty')!r}/{jwk.get('crv')!r}"
        )
    x = jwk.get("x")
    if not isinstance(x, str):
        raise _bad_key("the JWK has no `x` (the public key)")
    try:
        raw = b64url_decode(x)
    except ValueError as exc:
        raise _bad_key(f"x: {exc}") from None
    if len(raw) != 32:
        raise _bad_key(f"x decodes to {len(raw)} bytes; an Ed25519 public key is 32")
    key = Ed25519PublicKey.from_public_bytes(raw)
    kid = jwk.get("kid")
    if kid is not None and kid != key_id(key):
        raise _bad_key(f"kid {kid!r} does not match the key (its kid is {key_id(key)!r})")
    return key


def _candidate_keys(
    public_jwk_or_doc: Mapping[str, Any], kid: str | None, payload: str | None = None
) -> list[Mapping[str, Any]]:
    if "keys" in public_jwk_or_doc:
        keys = public_jwk_or_doc["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, Mapping) for k in keys):
            raise _bad_key("`keys` must be a list of JWK objects")
        found: list[Mapping[str, Any]] = keys
    else:
        found = [public_jwk_or_doc]
    return [
        k
        for k in found
        if (kid is None or k.get("kid") == kid)
        and (payload is None or payload in k.get("consentry_payloads", [payload]))
    ]


def verify(
    public_jwk_or_doc: Mapping[str, Any],
    data: bytes,
    signature: bytes,
    *,
    kid: str | None = None,
    payload: str | None = None,
) -> bool:
    """True when `signature` is a valid Ed25519 signature of `data` under the given key(s).

    1. `public_jwk_or_doc` is one JWK or a key set `{"keys": [...]}` (the well-known
       document); with a set, any key may match, or only the one named `kid`. With
       `payload`, a key whose `consentry_payloads` do not include it is never tried (a
       signature over another kind of payload cannot pass for this one).
    2. Malformed keys are BadInput (the verifier was handed something that is not a key);
       a signature that does not check, or that is not 64 bytes, is simply False.
    """
    if len(signature) != 64:
        return False
    for jwk in _candidate_keys(public_jwk_or_doc, kid, payload):
        try:
            public_key_from_jwk(jwk).verify(signature, data)
        except InvalidSignature:
            continue
        return True
    return False


@dataclass(frozen=True, slots=True)
class Signer:
    """The installation's signing key: signs, and publishes its public half."""

    private_key: Ed25519PrivateKey

    @classmethod
    def for_home(cls, home: Path) -> Signer:
        """The signer of `home` (its `keys/signing.key`, created on first use)."""
        return cls(Keyring.for_home(home).signing_key)

    @classmethod
    def from_keyring(cls, keyring: Keyring) -> Signer:
        return cls(keyring.signing_key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def kid(self) -> str:
        """The key id licensees see in the keys document and in manifests."""
        return key_id(self.public_key)

    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.public_key)

    def public_keys_document(self) -> dict[str, list[dict[str, str]]]:
        """A key set holding this key alone: `{"keys": [JWK]}`."""
        return {"keys": [self.public_jwk()]}

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data` (deterministic, RFC 8032)."""
        return self.private_key.sign(data)
