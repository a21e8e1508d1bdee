"""Load and verify a Consentry delivery with a licensee's own tools, without Consentry.

    python examples/licensee_verify.py --url https://platform.example --api-key csk_… \
        --dir ./verified [--json]

Uses the standard library plus `datasets`, `mlcroissant`, `securesystemslib` and
`http-message-signatures` (and `cryptography`, which the last two bring). It:

1. Fetches the published key set (`/.well-known/consentry-keys.json`, a JWKS with history).
2. Downloads the newest delivery (parts, README.md, croissant.json, manifest.json,
   manifest.sig, manifest.intoto.json).
3. Verifies the DSSE envelope with securesystemslib against the published `attestation`
   keys, and every downloaded file's SHA-256 against the in-toto Statement's subjects.
4. Loads the rows with mlcroissant (which checks each part's sha256 from croissant.json)
   and with `datasets.load_dataset` (offline), and checks both give the same record ids.
5. Fetches the first revocation feed page and verifies its RFC 9421 signature and
   Content-Digest with http-message-signatures against the published `http` keys.

Exit 0 when everything checks, 1 naming the first thing that does not.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import Key, SSlibKey  # type: ignore[attr-defined]

__all__ = ["VerifyError", "main", "verify"]

FEED_TAG = "consentry-revocation-feed"
PAYLOAD_TYPE = "application/vnd.in-toto+json"


class VerifyError(Exception):
    """Something the platform sent does not check out."""


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Response:
    """What http-message-signatures reads from a response: status, headers, request."""

    status_code: int
    headers: dict[str, str]
    request: _Request
    content: bytes


class _Http:
    def __init__(self, url: str, api_key: str) -> None:
        self.base = url.rstrip("/")
        self.api_key = api_key

    def get(self, path: str) -> _Response:
        url = path if path.startswith("http") else self.base + path
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.api_key}"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            headers = dict(answer.headers.items())
            return _Response(answer.status, headers, _Request("GET", url), answer.read())


def _keys(jwks: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """The published keys of one payload kind (current and retired)."""
    return {k["kid"]: k for k in jwks["keys"] if kind in k.get("consentry_payloads", [])}


class _JwksResolver(HTTPSignatureKeyResolver):
    def __init__(self, keys: dict[str, dict[str, Any]]) -> None:
        self.keys = keys

    def resolve_public_key(self, key_id: str) -> Ed25519PublicKey:
        if key_id not in self.keys:
            raise InvalidSignature(f"unknown http key {key_id!r}")
        return Ed25519PublicKey.from_public_bytes(_b64url(self.keys[key_id]["x"]))

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError("a verifier holds no private keys")


def verify_envelope(directory: Path, jwks: dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement of `manifest.intoto.json`, once securesystemslib verified it
    and every subject's file in `directory` has its digest."""
    keys: list[Key] = [
        SSlibKey(kid, "ed25519", "ed25519", {"public": _b64url(k["x"]).hex()})
        for kid, k in _keys(jwks, "attestation").items()
    ]
    envelope = Envelope.from_dict(json.loads((directory / "manifest.intoto.json").read_text()))
    if envelope.payload_type != PAYLOAD_TYPE:
        raise VerifyError(f"unexpected DSSE payload type {envelope.payload_type!r}")
    try:
        envelope.verify(keys, 1)
    except VerificationError as exc:
        raise VerifyError(f"the DSSE envelope does not verify: {exc}") from None
    statement: dict[str, Any] = json.loads(envelope.payload)
    for subject in statement["subject"]:
        path = directory / Path(subject["name"]).name
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != subject["digest"]["sha256"]:
            raise VerifyError(f"{subject['name']}: sha256 differs from the signed statement")
    return statement


def load_rows(directory: Path) -> tuple[list[str], list[str]]:
    """Record ids as mlcroissant reads them and as `datasets` reads them (offline)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=str(directory / "croissant.json"))
    try:
        croissant = [record["records/record_id"].decode() for record in dataset.records("records")]
    except Exception as exc:  # mlcroissant wraps every failure in its own error types
        raise VerifyError(f"mlcroissant refused the delivery: {exc}") from None
    loaded = datasets.load_dataset(str(directory), split="train")
    return sorted(croissant), sorted(loaded["record_id"])


def verify_feed_page(http: _Http, jwks: dict[str, Any]) -> dict[str, Any]:
    """The first revocation feed page, once its RFC 9421 signature and Content-Digest
    verified under a published `http` key."""
    response = http.get("/v1/licensee/revocations?cursor=&limit=100")
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_JwksResolver(_keys(jwks, "http"))
    )
    try:
        verifier.verify(
            response,
            expect_tag=FEED_TAG,
            require_components=('"@method";req', '"@target-uri";req', "content-digest"),
            body=response.content,
        )
    except InvalidSignature as exc:
        raise VerifyError(f"the feed page's signature does not verify: {exc}") from None
    page: dict[str, Any] = json.loads(response.content)
    return page


def verify(url: str, api_key: str, directory: Path) -> dict[str, Any]:
    """Steps 1-5 of the module docstring; returns what was checked."""
    http = _Http(url, api_key)
    jwks = json.loads(http.get("/.well-known/consentry-keys.json").content)
    listing = json.loads(http.get("/v1/licensee/deliveries").content)
    if not listing["deliveries"]:
        raise VerifyError("the licensee has no deliveries")
    summary = listing["deliveries"][0]
    target = directory / summary["delivery_id"]
    target.mkdir(parents=True, exist_ok=True)
    urls = [f["url"] for f in summary["files"]] + [d["url"] for d in summary["documents"]]
    urls += [summary["manifest_url"].replace("/manifest", "/files/manifest.json")]
    urls += [summary["signature_url"], summary["envelope_url"]]
    for file_url in urls:
        (target / file_url.rsplit("/", 1)[1]).write_bytes(http.get(file_url).content)
    statement = verify_envelope(target, jwks)
    croissant, loaded = load_rows(target)
    if croissant != loaded:
        raise VerifyError("mlcroissant and datasets read different records")
    page = verify_feed_page(http, jwks)
    return {
        "delivery_id": summary["delivery_id"],
        "subjects": len(statement["subject"]),
        "records": len(loaded),
        "revocations_on_first_page": len(page["revocations"]),
        "ok": True,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a delivery with outside tools only.")
    parser.add_argument("--url", required=True, help="The platform's Consentry API base URL.")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("CONSENTRY_API_KEY"),
        help="The licensee API key (default: $CONSENTRY_API_KEY).",
    )
    parser.add_argument("--dir", required=True, type=Path, help="Where to download to.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set CONSENTRY_API_KEY")
    try:
        report = verify(args.url, args.api_key, args.dir)
    except VerifyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report["consentry_imported"] = any(m.split(".")[0] == "consentry" for m in sys.modules)
    print(json.dumps(report, indent=2) if args.json else f"ok: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
