"""The audit log over HTTP: signed checkpoints and consistency proofs (public), inclusion
proofs (admin), and the transparency report as JSON (public)."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from consentry.api.validation import MAX_INT64, WholeNumber
from consentry.audit.log import AuditLog, ConsistencyProof, InclusionProof
from consentry.audit.transparency import transparency_report
from consentry.errors import BadInput, ConsentryError
from consentry.instants import RANGE_TEXT
from consentry.jsonable import to_jsonable
from consentry.serving.problems import error_responses, problem, unprocessable
from consentry.serving.services import BearerIdentity, Services, services
from consentry.signing import Signer
from consentry.web.transparency import report_period

__all__ = ["consistency_json", "inclusion_json", "router"]

router = APIRouter(prefix="/v1/audit", tags=["audit"])
ServicesDep = Annotated[Services, Depends(services)]


class ConsistencyView(BaseModel):
    """PROOF(first, D[second]) of RFC 9162, hashes in base64."""

    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]


class InclusionView(BaseModel):
    """PATH(leaf_index, D[tree_size]) of RFC 9162 for one audit event, hashes in base64."""

    event_id: int
    leaf_index: int
    tree_size: int
    event_type: str
    at: str
    payload: str = Field(description="The payload's canonical JSON, exactly as stored.")
    entry: str = Field(description="The leaf's entry text, as hashed.")
    leaf_hash: str
    root_hash: str
    path: list[str]


class FamilyCounts(BaseModel):
    events: int
    totals: dict[str, int | str] = Field(description="Sum of each numeric payload field.")


class ConsentCell(BaseModel):
    purpose: str
    region: str
    choice: str
    users: int | None = Field(description="Null: a small cell, suppressed.")


class MonthlyCell(BaseModel):
    month: str = Field(description="Calendar month, `YYYY-MM` (UTC).")
    purpose: str
    choice: str
    users: int | None = Field(description="Null: a small cell, suppressed.")


class ConsentSection(BaseModel):
    small_cell_threshold: int
    purposes: dict[str, dict[str, int | None]]
    cells: list[ConsentCell]
    monthly: list[MonthlyCell]


class DeliveriesRow(BaseModel):
    licensee_id: str
    licensee: str
    purposes: list[str]
    deliveries: int
    records: int
    considered: int


class RevocationMonth(BaseModel):
    month: str
    issued: int
    confirmed: int
    median_seconds: int | None
    confirmed_by_deadline: int


class RevocationTimes(BaseModel):
    issued: int = Field(description="Revocations issued in the period.")
    confirmed: int = Field(description="Revocations confirmed in the period.")
    median_seconds: int | None = Field(description="Median time from issue to confirmation.")
    confirmed_by_deadline: int
    awaiting: int = Field(description="Issued before the end, not confirmed by then.")
    overdue: int = Field(description="Of those, past their deadline at the end.")
    monthly: list[RevocationMonth]


class Purges(BaseModel):
    purges: int
    records_deleted: int
    records_anonymised: int
    verified: int
    holds_placed: int


class Assessment(BaseModel):
    assessment_id: str
    recorded_at: str
    policy_version: str
    accesses: int
    entities: int
    billed_entities: int
    billed_windows: int
    total_amount: str
    currency: str


class ScrapingDamages(BaseModel):
    assessments: list[Assessment] = Field(description="Newest first; amounts are not added up.")


class LogSection(BaseModel):
    size: int
    checkpoint: str = Field(description="The signed checkpoint the counts were read from.")


class TransparencyView(BaseModel):
    """The transparency report (docs/transparency.md); `revocations`, `retention`, `scraping`
    and `policy` count their audit event types."""

    model_config = ConfigDict(populate_by_name=True)
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    consent: ConsentSection
    deliveries: list[DeliveriesRow]
    revocations: dict[str, FamilyCounts]
    retention: dict[str, FamilyCounts]
    scraping: dict[str, FamilyCounts]
    policy: dict[str, FamilyCounts]
    revocation_times: RevocationTimes
    purges: Purges
    scraping_damages: ScrapingDamages
    log: LogSection


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def inclusion_json(proof: InclusionProof) -> dict[str, Any]:
    """An inclusion proof as JSON (hashes base64, as in checkpoints)."""
    leaf = proof.leaf
    return {
        "event_id": leaf.event_id,
        "leaf_index": leaf.leaf_index,
        "tree_size": proof.tree_size,
        "event_type": leaf.event_type,
        "at": leaf.at,
        "payload": leaf.payload,
        "entry": leaf.entry,
        "leaf_hash": _b64(leaf.leaf_hash),
        "root_hash": _b64(proof.root_hash),
        "path": [_b64(h) for h in proof.path],
    }


def consistency_json(proof: ConsistencyProof) -> dict[str, Any]:
    return {
        "first": proof.first,
        "second": proof.second,
        "first_root": _b64(proof.first_root),
        "second_root": _b64(proof.second_root),
        "path": [_b64(h) for h in proof.path],
    }


@router.get(
    "/checkpoint",
    summary="The log's current signed checkpoint (C2SP checkpoint text)",
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "The checkpoint note.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
def checkpoint(svc: ServicesDep) -> PlainTextResponse:
    """Origin, size and base64 root hash, then a blank line and the Ed25519 signature line.
    Signed on request (deterministic for a given head); not recorded."""
    signed = AuditLog(svc.store).checkpoint(Signer.from_keyring(svc.keyring), record=False)
    return PlainTextResponse(signed.note(), media_type="text/plain; charset=utf-8")


@router.get(
    "/consistency",
    summary="Consistency proof between two tree sizes",
    response_model=ConsistencyView,
    responses=error_responses(404),
)
def consistency(
    svc: ServicesDep,
    first: Annotated[
        WholeNumber,
        Query(
            ge=1, le=MAX_INT64, description="The older tree size (no proof from the empty tree)."
        ),
    ],
    second: Annotated[
        WholeNumber | None,
        Query(ge=0, le=MAX_INT64, description="The newer size (default: now)."),
    ] = None,
) -> dict[str, Any]:
    try:
        return consistency_json(AuditLog(svc.store).consistency(first, second))
    except ConsentryError as exc:
        raise problem(404, str(exc), location="query") from None


@router.get(
    "/proof/{event_id}",
    summary="Inclusion proof of one audit event (admin)",
    response_model=InclusionView,
    responses=error_responses(401, 403, 404),
)
def proof(
    event_id: Annotated[WholeNumber, Path(ge=1, le=MAX_INT64, description="The audit event's id.")],
    svc: ServicesDep,
    identity: BearerIdentity,
    size: Annotated[
        WholeNumber | None, Query(ge=1, le=MAX_INT64, description="Tree size (default: now).")
    ] = None,
) -> dict[str, Any]:
    """The event's leaf entry, its index, and PATH(index, D[size]); admin tokens only (the
    entries are pseudonymous, not public)."""
    if identity.role != "admin":
        raise problem(403, "inclusion proofs need an admin token")
    try:
        return inclusion_json(AuditLog(svc.store).prove(event_id, size))
    except ConsentryError as exc:
        raise problem(404, str(exc), location="path", field="event_id") from None


_FROM = (
    f"Start: a date or an RFC 3339 instant, {RANGE_TEXT}; default: a year before `to`. "
    "With neither `from` nor `to`: a year before now, or from a year before the last day "
    "someone made a choice when that is older."
)
_TO = "End (exclusive; a date means the end of that day); default: now."


@router.get(
    "/transparency",
    summary="The transparency report as JSON",
    response_model=TransparencyView,
    response_model_by_alias=True,
)
def transparency(
    svc: ServicesDep,
    start: Annotated[str | None, Query(alias="from", description=_FROM)] = None,
    end: Annotated[str | None, Query(alias="to", description=_TO)] = None,
) -> dict[str, Any]:
    """Counts for the period [from, to) (small counts suppressed), signed like checkpoints."""
    try:
        begin, stop = report_period(start or None, end or None, store=svc.store)
    except BadInput as exc:
        raise unprocessable(exc, "query") from None
    report = transparency_report(svc.store, Signer.from_keyring(svc.keyring), start=begin, end=stop)
    result: dict[str, Any] = to_jsonable(report)
    return result
