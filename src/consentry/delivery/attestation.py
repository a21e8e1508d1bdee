"""A delivery's manifest as an in-toto Statement v1 in a DSSE envelope.

Pinned to these texts (docs/formats.md):
- DSSE v1 (secure-systems-lab/dsse, envelope.md and protocol.md): the signature is over
  PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal;
  the envelope is `{"payload": base64(body), "payloadType": type, "signatures": [{"keyid",
  "sig": base64(signature)}]}` (standard base64 with padding).
- in-toto Attestation Framework, Statement v1: `{"_type": "https://in-toto.io/Statement/v1",
  "subject": [{"name", "digest": {"sha256"}}], "predicateType", "predicate"}` carried with
  payloadType `application/vnd.in-toto+json`.

The envelope sits beside `manifest.sig` as `manifest.intoto.json`. Its key is the
`attestation` key (one key per payload kind), and the payload type is inside the signed
bytes, so it cannot pass for a signature over anything else.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from consentry.signing import Signer, verify

__all__ = [
    "ENVELOPE_FILE",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "envelope",
    "pae",
    "statement",
    "verify_envelope",
]

ENVELOPE_FILE: Final = "manifest.intoto.json"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE: Final = "urn:consentry:predicate:delivery-manifest:v1"
"""Versioned: a change of the manifest's meaning gets a new predicate type."""


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of (type, body)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def statement(subjects: Sequence[tuple[str, str]], manifest: Mapping[str, Any]) -> bytes:
    """The in-toto Statement: every file (name, sha256) a subject, the manifest the predicate.

    Serialised compactly with sorted keys (the bytes are what is signed; any JSON reader
    reads them)."""
    body = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": sha}} for name, sha in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(manifest),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def envelope(body: bytes, signer: Signer) -> dict[str, Any]:
    """The DSSE envelope of `body` (an in-toto Statement) signed by `signer`."""
    signature = signer.sign(pae(PAYLOAD_TYPE, body))
    return {
        "payload": base64.b64encode(body).decode("ascii"),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [{"keyid": signer.kid, "sig": base64.b64encode(signature).decode("ascii")}],
    }


def verify_envelope(document: Mapping[str, Any], keys: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Statement inside a DSSE envelope when one signature verifies, else None.

    1. The payload type must be the in-toto one; payload and signatures base64.
    2. A signature counts when a published key of kind `attestation` with its `keyid`
       verifies it over PAE(type, payload).
    3. The payload must be an in-toto Statement v1 of our predicate type.
    """
    try:
        if document.get("payloadType") != PAYLOAD_TYPE:
            return None
        body = base64.b64decode(str(document["payload"]), validate=True)
        signatures = list(document["signatures"])
        message = pae(PAYLOAD_TYPE, body)
        ok = any(
            verify(
                keys,
                message,
                base64.b64decode(str(s["sig"]), validate=True),
                kid=str(s["keyid"]),
                payload="attestation",
            )
            for s in signatures
        )
        if not ok:
            return None
        parsed = json.loads(body)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    if not isinstance(parsed, dict) or parsed.get("_type") != STATEMENT_TYPE:
        return None
    if parsed.get("predicateType") != PREDICATE_TYPE:
        return None
    return parsed
