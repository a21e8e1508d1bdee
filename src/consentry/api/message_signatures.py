"""RFC 9421 HTTP Message Signatures (Ed25519) and RFC 9530 `Content-Digest` on responses.

Pinned to RFC 9421 (HTTP Message Signatures, February 2024) and RFC 9530 (Digest Fields,
February 2024). A signed response carries:

    Content-Digest: sha-256=:<base64 SHA-256 of the body>:
    Signature-Input: sig1=("@method";req "@target-uri";req "@status" "content-digest");
        created=<unix seconds>;keyid="<kid>";alg="ed25519";tag="<payload kind>"
    Signature: sig1=:<base64 Ed25519 signature of the signature base>:

The signature base (RFC 9421 §2.5) is one line per covered component, `"<name>";req: value`
for the request's method and target URI (§2.4, so a page cannot be replayed as the answer to
another request), then `"@signature-params": <the inner list above>`, joined with LF and no
trailing LF. The `tag` names the payload kind (`consentry-revocation-feed`,
`consentry-receipt`), so a signature over one kind of response never passes for another;
the key is the `http` key of the key set.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any, Final

from consentry.signing import Signer

__all__ = [
    "FEED_TAG",
    "RECEIPT_TAG",
    "SIGNATURE_HEADERS",
    "content_digest",
    "signature_base",
    "signed_headers",
]

FEED_TAG: Final = "consentry-revocation-feed"
RECEIPT_TAG: Final = "consentry-receipt"
COVERED: Final = ('"@method";req', '"@target-uri";req', '"@status"', '"content-digest"')
_LABEL: Final = "sig1"

SIGNATURE_HEADERS: Final[dict[str, Any]] = {
    "Content-Digest": {
        "description": "RFC 9530: `sha-256=:<base64>:` of the body.",
        "schema": {"type": "string"},
    },
    "Signature-Input": {
        "description": 'RFC 9421: sig1=("@method";req "@target-uri";req "@status" '
        '"content-digest");created=…;keyid="…";alg="ed25519";tag="…".',
        "schema": {"type": "string"},
    },
    "Signature": {
        "description": "RFC 9421: sig1=:<base64 Ed25519 signature>: (docs/formats.md).",
        "schema": {"type": "string"},
    },
}
"""OpenAPI declarations of the three response headers."""


def content_digest(body: bytes) -> str:
    """RFC 9530 `Content-Digest` of `body` (sha-256, a structured-field dictionary)."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def _params(created: int, kid: str, tag: str) -> str:
    return f'({" ".join(COVERED)});created={created};keyid="{kid}";alg="ed25519";tag="{tag}"'


def signature_base(method: str, target_uri: str, status: int, digest: str, params: str) -> bytes:
    """The RFC 9421 §2.5 signature base of the covered components."""
    lines = [
        f'"@method";req: {method.upper()}',
        f'"@target-uri";req: {target_uri}',
        f'"@status": {status}',
        f'"content-digest": {digest}',
        f'"@signature-params": {params}',
    ]
    return "\n".join(lines).encode("ascii")


def signed_headers(
    signer: Signer,
    *,
    method: str,
    target_uri: str,
    status: int,
    body: bytes,
    tag: str,
    created: datetime | None = None,
) -> dict[str, str]:
    """`Content-Digest`, `Signature-Input` and `Signature` for a response to
    `method target_uri` with `status` and `body`, signed by `signer` (its kid named)."""
    when = int((created or datetime.now(UTC)).timestamp())
    digest = content_digest(body)
    params = _params(when, signer.kid, tag)
    signature = signer.sign(signature_base(method, target_uri, status, digest, params))
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{_LABEL}={params}",
        "Signature": f"{_LABEL}=:{base64.b64encode(signature).decode('ascii')}:",
    }
