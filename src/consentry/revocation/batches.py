"""Signed revocation batches: one feed page as canonical JSON bytes and their Ed25519
signature (the key that signs delivery manifests).

A licensee keeps the exact body bytes and the signature as evidence of what it was told and
when; `verify_batch` (or any Ed25519 implementation with the published JWK) checks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from consentry.audit import canonical_json
from consentry.signing import Signer, b64url_decode, b64url_encode, verify

__all__ = [
    "KEY_ID_HEADER",
    "SIGNATURE_HEADER",
    "sign_batch",
    "verify_batch",
]

SIGNATURE_HEADER: Final = "Consentry-Signature"
"""Response header: base64url (unpadded) of the 64-byte Ed25519 signature of the body."""
KEY_ID_HEADER: Final = "Consentry-Key-Id"
"""Response header: the `kid` of the key that signed (as in the well-known keys document)."""


def sign_batch(signer: Signer, batch: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """The batch's canonical JSON bytes (sorted keys, no whitespace, UTF-8) and the headers
    carrying its signature and key id."""
    body = canonical_json(batch).encode("utf-8")
    return body, {SIGNATURE_HEADER: b64url_encode(signer.sign(body)), KEY_ID_HEADER: signer.kid}


def verify_batch(keys: Mapping[str, Any], body: bytes, signature: str) -> bool:
    """True when `signature` (base64url) is a valid signature of `body` under a published
    key (`keys`: one JWK or the well-known document); False otherwise, never raising for
    a malformed signature."""
    try:
        raw = b64url_decode(signature)
    except ValueError:
        return False
    return verify(keys, body, raw, payload="feed")
