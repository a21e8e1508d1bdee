"""The licensee API under /v1/licensee: deliveries, their files, the revocation feed and
deletion receipts. Callers authenticate with their API key (`Authorization: Bearer csk_…`)
and only ever see their own deliveries and revocations.

`router` also carries the user's recipients route and the revocation pages, so the app
includes the whole capability with one line.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import FileResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from consentry.api.consent import require_json
from consentry.api.message_signatures import (
    FEED_TAG,
    RECEIPT_TAG,
    SIGNATURE_HEADERS,
    signed_headers,
)
from consentry.api.validation import WholeNumber
from consentry.audit import canonical_json
from consentry.delivery.attestation import ENVELOPE_FILE
from consentry.delivery.cards import CARD_FILE, CROISSANT_FILE
from consentry.delivery.keyset import KeySet
from consentry.delivery.licensees import LicenseeRecord, authenticate_api_key
from consentry.delivery.service import deliveries_dir
from consentry.errors import BadInput
from consentry.instants import rfc3339
from consentry.revocation import (
    MAX_PAGE,
    MAX_RECEIPT_IDS,
    Cursor,
    RevocationLog,
    decode_cursor,
    encode_cursor,
    parse_receipt_ids,
)
from consentry.revocation.batches import KEY_ID_HEADER, SIGNATURE_HEADER, sign_batch
from consentry.serving.problems import ApiProblem, error_responses, problem, unprocessable
from consentry.serving.services import Services, services
from consentry.signing import b64url_encode

__all__ = ["api_router", "cursor_key", "licensee_identity", "router"]

_DELIVERY_ID: Final = re.compile(r"dlv-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}")
_FILE_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")

api_router = APIRouter(
    prefix="/v1/licensee", tags=["licensee"], dependencies=[Depends(require_json)]
)
ServicesDep = Annotated[Services, Depends(services)]


_API_KEY = HTTPBearer(
    scheme_name="apiKey",
    description="A licensee's API key, `csk_<id>_<secret>` (docs/licensees.md).",
    auto_error=False,
)


def licensee_identity(
    svc: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_API_KEY)],
) -> LicenseeRecord:
    """The active licensee named by `Authorization: Bearer <API key>`; 401 otherwise.

    1. No bearer credential: 401 saying an API key is required.
    2. Something that is not shaped like an API key (`csk_<16 hex>_<43 base64url>`), a key
       that does not match, or a disabled licensee's key: 401 (which one is not said).
    """
    key = credentials.credentials if credentials else ""
    if not key.strip():
        raise _unauthorized(
            "a licensee API key is required (Authorization: Bearer csk_…)", "Bearer"
        )
    key = key.strip()
    if not key.startswith("csk_"):
        raise _unauthorized(
            "not a licensee API key: they look like csk_<id>_<secret> "
            "(user and admin tokens do not open the licensee API)"
        )
    record = authenticate_api_key(svc.store, key, svc.keyring)
    if record is None:
        raise _unauthorized("invalid API key, or the licensee is disabled")
    return record


def _unauthorized(message: str, challenge: str = 'Bearer error="invalid_token"') -> ApiProblem:
    return problem(
        401,
        message,
        location="header",
        field="Authorization",
        headers={"WWW-Authenticate": challenge},
    )


LicenseeDep = Annotated[LicenseeRecord, Depends(licensee_identity)]


def cursor_key(svc: Services) -> bytes:
    """The key that authenticates feed cursors (derived from the session secret)."""
    return hmac.new(
        svc.keyring.session_secret, b"consentry revocation cursor key v1", hashlib.sha256
    ).digest()


# -- deliveries ------------------------------------------------------------------------------


def _manifest(svc: Services, licensee: LicenseeRecord, delivery_id: str) -> tuple[Path, Any]:
    """The delivery's directory and manifest; 404 unless it is a visible delivery of this
    licensee (another licensee's delivery is indistinguishable from none)."""
    missing = problem(
        404,
        f"no delivery {delivery_id!r} for licensee {licensee.name}",
        location="path",
        field="delivery_id",
    )
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise missing
    directory = deliveries_dir(svc.settings) / delivery_id
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise missing from None
    if manifest.get("licensee") != licensee.name:
        raise missing
    return directory, manifest


class DeliveryFile(BaseModel):
    """One part file of a delivery."""

    name: str
    rows: int
    sha256: str = Field(description="SHA-256 of the file, hex.")
    url: str = Field(description="Where to download it (Range requests accepted).")


class DeliverySummary(BaseModel):
    delivery_id: str
    purpose: str
    as_of: datetime
    created_at: datetime
    policy_version: str | None
    delivered: int = Field(description="Records delivered.")
    signing_key: str = Field(description="Key id of the manifest's Ed25519 signature.")
    manifest_url: str
    signature_url: str
    files: list[DeliveryFile]
    documents: list[DeliveryFile] = Field(
        description="The dataset card, Croissant record and other signed documents."
    )
    envelope_url: str | None = Field(
        description="The DSSE envelope of the in-toto statement over every file (none for "
        "deliveries made before envelopes existed)."
    )


class DeliveriesView(BaseModel):
    licensee: str
    deliveries: list[DeliverySummary]


class ManifestCounts(BaseModel):
    model_config = ConfigDict(extra="allow")
    considered: int
    delivered: int
    excluded: dict[str, int] = Field(description="Posts left out, per reason.")


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    rows: int
    sha256: str


class DeliveryManifest(BaseModel):
    """manifest.json: what a delivery holds, signed with Ed25519 (docs/deliveries.md)."""

    model_config = ConfigDict(extra="allow")
    delivery_id: str
    licensee: str
    purpose: str
    as_of: str
    policy_version: str | None
    engine: str
    created_at: str
    counts: ManifestCounts
    files: list[ManifestFile]
    columns: list[str]
    lineage_sha256: str
    signing_key: str


class RevocationItem(BaseModel):
    revocation_id: str
    record_id: str = Field(description="The record to delete (64 hex digits).")
    delivery_ids: list[str]
    reason: str
    since: str
    revoked_at: str
    due_at: str = Field(description="Delete it and send a receipt by then.")
    status: str = Field(description="pending, overdue or confirmed.")
    confirmed_at: str | None


class RevocationBatch(BaseModel):
    """One signed batch of the revocation feed (canonical JSON)."""

    licensee: str
    cursor: str
    next_cursor: str = Field(description="Pass it as `cursor` to read on.")
    has_more: bool
    issued_at: str
    signing_key: str
    revocations: list[RevocationItem]


class ReceiptView(BaseModel):
    receipt_id: str = Field(description="The receipt's id (in the audit log's event).")
    confirmed: list[str]
    already_confirmed: list[str]
    unknown: list[str] = Field(description="Ids with no revocation for this licensee.")


def _summary(manifest: dict[str, Any]) -> DeliverySummary:
    base = f"/v1/licensee/deliveries/{manifest['delivery_id']}"
    return DeliverySummary(
        delivery_id=manifest["delivery_id"],
        purpose=manifest["purpose"],
        as_of=manifest["as_of"],
        created_at=manifest["created_at"],
        policy_version=manifest["policy_version"],
        delivered=manifest["counts"]["delivered"],
        signing_key=manifest["signing_key"],
        manifest_url=f"{base}/manifest",
        signature_url=f"{base}/files/manifest.sig",
        files=[
            DeliveryFile(
                name=f["name"], rows=f["rows"], sha256=f["sha256"], url=f"{base}/files/{f['name']}"
            )
            for f in manifest["files"]
        ],
        documents=[
            DeliveryFile(
                name=d["name"],
                rows=d.get("rows", 0),
                sha256=d["sha256"],
                url=f"{base}/files/{d['name']}",
            )
            for d in manifest.get("documents", [])
        ],
        envelope_url=f"{base}/files/{ENVELOPE_FILE}" if "documents" in manifest else None,
    )


@api_router.get(
    "/deliveries",
    summary="This licensee's deliveries, newest first",
    response_model=DeliveriesView,
    responses=error_responses(401),
)
def list_my_deliveries(svc: ServicesDep, licensee: LicenseeDep) -> DeliveriesView:
    from consentry.delivery.service import list_deliveries

    mine = [m for m in list_deliveries(svc.settings) if m["licensee"] == licensee.name]
    return DeliveriesView(licensee=licensee.name, deliveries=[_summary(m) for m in mine])


_SIGNED: dict[str, Any] = {
    SIGNATURE_HEADER: {
        "description": "Ed25519 signature of the body (base64url).",
        "schema": {"type": "string"},
    },
    KEY_ID_HEADER: {
        "description": "The signing key (see /.well-known/consentry-keys.json).",
        "schema": {"type": "string"},
    },
}


@api_router.get(
    "/deliveries/{delivery_id}/manifest",
    summary="A delivery's manifest.json, byte for byte, with its signature in a header",
    response_class=Response,
    responses={
        200: {
            "model": DeliveryManifest,
            "description": "manifest.json as signed (the bytes the signature covers).",
            "headers": _SIGNED,
        },
        **error_responses(401, 404),
    },
)
def delivery_manifest(delivery_id: str, svc: ServicesDep, licensee: LicenseeDep) -> Response:
    directory, _ = _manifest(svc, licensee, delivery_id)
    body = (directory / "manifest.json").read_bytes()
    signature = (directory / "manifest.sig").read_bytes()
    return Response(
        body,
        media_type="application/json",
        headers={
            SIGNATURE_HEADER: b64url_encode(signature),
            KEY_ID_HEADER: json.loads(body)["signing_key"],
        },
    )


_FILE_TYPES = (
    "application/vnd.apache.parquet",
    "application/json",
    "application/ld+json",
    "text/markdown",
    "application/octet-stream",
)
_DOCUMENT_TYPES = {
    "manifest.json": "application/json",
    "manifest.sig": "application/octet-stream",
    ENVELOPE_FILE: "application/json",
    CROISSANT_FILE: "application/ld+json",
    CARD_FILE: "text/markdown",
}


@api_router.get(
    "/deliveries/{delivery_id}/files/{name}",
    summary="One file of a delivery (parts, README.md, croissant.json, manifest.json, "
    "manifest.sig, manifest.intoto.json); Range requests",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The whole file.",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _FILE_TYPES},
        },
        206: {
            "description": "The slice a `Range: bytes=…` header asked for.",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in _FILE_TYPES},
        },
        **error_responses(401, 404),
    },
)
def delivery_file(
    delivery_id: str, name: str, svc: ServicesDep, licensee: LicenseeDep
) -> FileResponse:
    """Streamed from disk; `Range: bytes=…` gets 206 with that slice (resumable downloads).

    Only names the manifest lists, `manifest.json`, `manifest.sig` and (for deliveries
    that have one) `manifest.intoto.json` are served."""
    directory, manifest = _manifest(svc, licensee, delivery_id)
    listed = {f["name"] for f in manifest["files"]} | {"manifest.json", "manifest.sig"}
    documents = manifest.get("documents", [])
    listed |= {d["name"] for d in documents} | ({ENVELOPE_FILE} if documents else set())
    if not _FILE_NAME.fullmatch(name) or name not in listed:
        raise problem(
            404, f"delivery {delivery_id} has no file {name!r}", location="path", field="name"
        )
    media = _DOCUMENT_TYPES.get(name, "application/vnd.apache.parquet")
    return FileResponse(directory / name, media_type=media, filename=name)


# -- revocations -----------------------------------------------------------------------------


@api_router.get(
    "/revocations",
    summary="The revocation feed: a signed batch after `cursor` (at-least-once, stable order)",
    response_class=Response,
    responses={
        200: {
            "model": RevocationBatch,
            "description": "One signed batch (canonical JSON).",
            "headers": {**_SIGNED, **SIGNATURE_HEADERS},
        },
        **error_responses(400, 401),
    },
)
def revocation_feed(
    request: Request,
    svc: ServicesDep,
    licensee: LicenseeDep,
    cursor: Annotated[
        str, Query(description="next_cursor of the previous batch; empty: from the start")
    ] = "",
    limit: Annotated[WholeNumber, Query(ge=1, le=MAX_PAGE)] = 100,
) -> Response:
    """One batch of this licensee's revocations after `cursor`, in log order.

    1. The cursor must be one this server issued to this licensee (else 400).
    2. The body is canonical JSON; `Consentry-Signature` is its Ed25519 signature (base64url)
       under the key `Consentry-Key-Id` names (see /.well-known/consentry-keys.json), and
       the response carries an RFC 9421 signature (`Signature`, `Signature-Input`,
       `Content-Digest`) over the request's method and URI, the status and the body.
    3. `next_cursor` resumes after the last revocation served; revocations logged later
       appear after it. Fetching with the same cursor again serves the same revocations
       (at-least-once: store the cursor after applying the batch).
    """
    key = cursor_key(svc)
    try:
        position = decode_cursor(cursor, key, licensee.id)
    except BadInput as exc:
        first = exc.problems[0]
        raise problem(400, first.message, location="query", field="cursor") from None
    log = RevocationLog(svc.store, svc.policy)
    found = log.page(licensee.id, position.seq, limit + 1)
    page, more = found[:limit], len(found) > limit
    now = datetime.now(UTC)
    last = page[-1].seq if page else position.seq
    keyset = KeySet.for_home(svc.settings.home)
    signer = keyset.signer("feed")
    batch = {
        "licensee": licensee.name,
        "cursor": cursor,
        "next_cursor": encode_cursor(Cursor(licensee.id, last), key),
        "has_more": more,
        "issued_at": rfc3339(now),
        "signing_key": signer.kid,
        "revocations": [entry.for_licensee(now) for entry in page],
    }
    body, headers = sign_batch(signer, batch)
    headers |= _http_signature(request, svc, keyset, body, FEED_TAG)
    return Response(body, media_type="application/json", headers=headers)


def _target_uri(request: Request, svc: Services) -> str:
    """The URI the client asked for: CONSENTRY_PUBLIC_URL (behind a proxy) or the request's
    own, with the path and query as sent."""
    if svc.settings.public_url is None:
        return str(request.url)
    query = f"?{request.url.query}" if request.url.query else ""
    return f"{svc.settings.public_url}{request.url.path}{query}"


def _http_signature(
    request: Request, svc: Services, keyset: KeySet, body: bytes, tag: str
) -> dict[str, str]:
    return signed_headers(
        keyset.signer("http"),
        method=request.method,
        target_uri=_target_uri(request, svc),
        status=200,
        body=body,
        tag=tag,
    )


class ReceiptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    record_ids: list[Any] = Field(
        min_length=1,
        max_length=MAX_RECEIPT_IDS,
        description="Record ids (64 hex digits) the licensee has deleted.",
    )


@api_router.post(
    "/revocations/receipts",
    summary="Confirm deletions: idempotent; ids that are not revocations are reported back",
    response_class=Response,
    responses={
        200: {
            "model": ReceiptView,
            "description": "The receipt (canonical JSON), signed per RFC 9421.",
            "headers": SIGNATURE_HEADERS,
        },
        **error_responses(400, 401, 415),
    },
)
def post_receipts(
    request: Request, body: ReceiptBody, svc: ServicesDep, licensee: LicenseeDep
) -> Response:
    """1. Every id must be a record id (else 422 naming the bad positions; nothing changes).
    2. Pending revocations of those records are confirmed; confirmed ones stay as they
       were (`already_confirmed`); ids with no revocation of this licensee are `unknown`.
    """
    try:
        ids = parse_receipt_ids(body.record_ids)
    except BadInput as exc:
        raise unprocessable(exc, "body") from None
    result = RevocationLog(svc.store, svc.policy).confirm(licensee.id, ids)
    view = ReceiptView(
        receipt_id=result.receipt_id,
        confirmed=result.confirmed,
        already_confirmed=result.already_confirmed,
        unknown=result.unknown,
    )
    content = canonical_json(view.model_dump()).encode("utf-8")
    keyset = KeySet.for_home(svc.settings.home)
    headers = _http_signature(request, svc, keyset, content, RECEIPT_TAG)
    return Response(content, media_type="application/json", headers=headers)


def _router() -> APIRouter:
    from consentry.api.recipients import router as recipients_router
    from consentry.web.revocations import router as pages_router

    combined = APIRouter()
    combined.include_router(api_router)
    combined.include_router(recipients_router)
    combined.include_router(pages_router)
    return combined


router = _router()
"""Everything revocations serve: the licensee API, the recipients route, the pages."""
