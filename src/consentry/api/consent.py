"""The consent API under /v1: read, change and check consent; the author's signals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from consentry.api.validation import (
    Instant,
    InstantOrDate,
    UserId,
    UserIdPath,
)
from consentry.errors import BadInput, Problem
from consentry.ledger.rules import ConsentDecision
from consentry.ledger.service import (
    MAX_CHECK_USERS,
    ConsentChange,
    ConsentEventRecord,
    Evidence,
)
from consentry.ledger.signals import author_signals
from consentry.observe.context import current_request_id
from consentry.policy import Choice
from consentry.serving.auth import Identity
from consentry.serving.problems import error_responses, problem, unprocessable
from consentry.serving.services import BearerIdentity, Services, run_read, services

__all__ = [
    "GET_ORIGIN",
    "JSON",
    "PUT_ORIGIN",
    "change_of",
    "committed_body",
    "consent_body",
    "gpc_requested",
    "record_gpc",
    "router",
    "shown_version_for",
    "signals_for",
]


async def require_json(request: Request) -> None:
    """Bodies are JSON: anything else is refused with 415 before it is read."""
    # `async def` with no await: a check of one header, run on the event loop rather than
    # handed to the thread pool (see `consentry.serving.services`).
    if request.method in ("PUT", "POST", "PATCH"):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise problem(
                415,
                f"send the body as application/json (got {kind or 'no content type'})",
                location="header",
                field="Content-Type",
            )


router = APIRouter(prefix="/v1", tags=["consent"], dependencies=[Depends(require_json)])
ServicesDep = Annotated[Services, Depends(services)]


class PurposeDecision(BaseModel):
    purpose: str
    title: str | None
    decision: Choice
    rule: str
    since: datetime | None
    policy_version: str | None


class ConsentView(BaseModel):
    user_id: str
    at: datetime
    policy_version: str | None
    purposes: list[PurposeDecision]
    gpc_recorded: list[str] = Field(
        default_factory=list, description="Purposes a Sec-GPC signal on this request switched off."
    )


class ChoiceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: Choice


class EventView(BaseModel):
    event_id: str
    purpose: str
    choice: Choice
    at: datetime
    source: str
    policy_version: str | None
    evidence_origin: str | None
    evidence_client: str | None
    evidence_shown_version: str | None
    recorded_at: datetime


class HistoryView(BaseModel):
    user_id: str
    events: list[EventView]


class CheckBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    purpose: str = Field(min_length=1)
    at: Instant | None = None
    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_CHECK_USERS)


class CheckDecision(BaseModel):
    user_id: str
    decision: Choice
    rule: str
    since: datetime | None
    policy_version: str | None
    known_user: bool = Field(description="Whether the platform told Consentry about the user.")


class CheckView(BaseModel):
    purpose: str
    at: datetime
    decisions: list[CheckDecision]


class SignalsView(BaseModel):
    user_id: str
    at: datetime
    content_usage: str = Field(description="AIPREF Content-Usage header value.")
    aipref: dict[str, Literal["y", "n"]]
    intents: dict[str, Any] = Field(description="Bluesky-style User Intents declaration.")
    tdm_reservation: int = Field(description="TDMRep tdm-reservation (1 reserved).")


def _require_self(identity: Identity, user_id: str, *, write: bool = False) -> None:
    """1. A user token acts only on its own subject. 2. Admins read and check anyone but
    never choose for a user."""
    if identity.role == "admin" and not write:
        return
    if identity.role == "user" and identity.subject == user_id:
        return
    raise problem(
        403,
        "this token may not act on another user's consent"
        if identity.role == "user"
        else "admins read and check consent; only the user may change it",
    )


def gpc_requested(request: Request) -> bool:
    """True when the request carries the Global Privacy Control signal (`Sec-GPC: 1`)."""
    return request.headers.get("sec-gpc", "").strip() == "1"


def _apply_gpc(request: Request, svc: Services, identity: Identity, origin: str) -> list[str]:
    """Record a GPC signal on a signed-in user's own request (never for admins)."""
    if identity.role != "user" or not gpc_requested(request):
        return []
    return record_gpc(svc, identity, origin)


def record_gpc(svc: Services, identity: Identity, origin: str) -> list[str]:
    """Record the GPC signal a user's request carried (a write: run it in the thread pool);
    the purposes it switched off."""
    recorded = svc.ledger.record_gpc(
        identity.subject,
        evidence=Evidence(origin=origin, client="api", shown_version=None),
    )
    return [e.purpose for e in recorded]


def _decisions(svc: Services, decisions: list[ConsentDecision]) -> list[PurposeDecision]:
    out = []
    for d in decisions:
        # The title as worded in the version the decision was made under.
        version = svc.policy.get(d.policy_version) if d.policy_version else None
        purpose = version.purpose(d.purpose) if version else None
        out.append(
            PurposeDecision(
                purpose=d.purpose,
                title=purpose.title if purpose else None,
                decision=d.decision,
                rule=d.rule.value,
                since=d.since,
                policy_version=d.policy_version,
            )
        )
    return out


def signals_for(svc: Services, user_id: str, at: datetime) -> SignalsView:
    """The author's preference signals at `at`, derived from their resolved consent."""
    signals = author_signals(svc.policy.version_at(at), svc.ledger.resolve_all(user_id, at))
    return SignalsView(
        user_id=user_id,
        at=at,
        content_usage=signals.content_usage,
        aipref=signals.aipref,
        intents=signals.intents,
        tdm_reservation=signals.tdm_reservation,
    )


SHOWN_POLICY_HEADER = "X-Consentry-Shown-Policy"


@router.get(
    "/users/{user_id}/consent",
    response_model=ConsentView,
    responses=error_responses(401, 403),
)
async def read_consent(
    user_id: UserIdPath,
    request: Request,
    svc: ServicesDep,
    identity: BearerIdentity,
    at: Annotated[
        InstantOrDate | None, Query(description="The instant to answer for; default now.")
    ] = None,
) -> Response:
    """Every purpose of the policy in force at `at`, with decision, rule and since."""
    _require_self(identity, user_id)
    body = await consent_body(svc, identity, user_id, gpc=gpc_requested(request), at=at)
    return Response(body, media_type=JSON)


JSON: Final = "application/json"
GET_ORIGIN: Final = "GET /v1/users/{id}/consent"
PUT_ORIGIN: Final = "PUT /v1/users/{id}/consent/{purpose}"


async def consent_body(
    svc: Services, identity: Identity, user_id: str, *, gpc: bool, at: datetime | None
) -> bytes:
    """The body of `read_consent`'s answer to a caller `_require_self` let through: what
    the route and the fast path (`consentry.api.consent_fast`) both send.

    1. A user's GPC signal (`gpc`) is recorded first, so that a reading of "now" already
       reflects it. Recording writes, so it runs in the thread pool; the read goes through
       `run_read`.
    2. Every purpose of the version in force at `at` (default now), resolved.
    """
    recorded: list[str] = []
    if identity.role == "user" and gpc:
        recorded = await run_in_threadpool(record_gpc, svc, identity, GET_ORIGIN)
    when = at or datetime.now(UTC)
    version = svc.policy.version_at(when)
    decisions = await run_read(svc, svc.ledger.resolve_all, user_id, when)
    view = ConsentView(
        user_id=user_id,
        at=when,
        policy_version=version.version if version else None,
        purposes=_decisions(svc, decisions),
        gpc_recorded=recorded,
    )
    return _json_bytes(view)


def _json_bytes(view: BaseModel) -> bytes:
    """A model this module built as its route's `response_model` says, serialised as is:
    FastAPI would validate it a second time (a hot path: every consent read and write).
    The bytes of `model_dump_json()` without its decode and re-encode."""
    return view.__pydantic_serializer__.to_json(view)


def _shown_version(svc: Services, shown: str | None, in_force: str) -> str:
    """The version the user was shown: the header's, which must name a version of the policy
    file published to the audit log (422 otherwise; a free-form string is no evidence), or
    else the version in force."""
    if shown is None:
        return in_force
    published = svc.published.names(shown)
    if shown not in published or not any(v.version == shown for v in svc.policy.versions):
        names = ", ".join(sorted(published)) or "none"
        raise unprocessable(
            BadInput(
                Problem(
                    "header",
                    None,
                    SHOWN_POLICY_HEADER,
                    f"{shown[:64]!r} is not a published policy version (published: {names})",
                )
            ),
            "header",
        )
    return shown


@router.put(
    "/users/{user_id}/consent/{purpose}",
    response_model=EventView,
    responses=error_responses(400, 401, 403, 404, 415),
)
async def change_consent(
    user_id: UserIdPath,
    purpose: str,
    body: ChoiceBody,
    request: Request,
    svc: ServicesDep,
    identity: BearerIdentity,
    shown_policy: Annotated[
        str | None,
        Header(
            alias=SHOWN_POLICY_HEADER,
            description="The published policy version the app showed the user (default: "
            "the version in force).",
        ),
    ] = None,
) -> Response:
    """Record the user's choice for one purpose; it takes effect immediately.

    1. Only the user's own token (403 otherwise; admins never choose for a user).
    2. The purpose must be one of the policy in force (404).
    3. `X-Consentry-Shown-Policy`, when sent, must name a published version (422).
    4. The user must be one the platform knows (404: no choice is recorded for an id nobody
       has).
    5. The choice is committed with the other requests' changes of the moment (group
       commit, `consentry.ledger.group`); the answer comes after that commit.
    """
    shown = shown_version_for(svc, identity, user_id, purpose, shown_policy)
    if gpc_requested(request):
        await run_in_threadpool(_apply_gpc, request, svc, identity, PUT_ORIGIN)
    change = change_of(user_id, purpose, body.choice, shown)
    try:
        svc.ledger.check_change(change)
    except BadInput as exc:
        raise unprocessable(exc, "body") from None
    return Response(await committed_body(svc, change), media_type=JSON)


def shown_version_for(
    svc: Services, identity: Identity, user_id: str, purpose: str, shown_policy: str | None
) -> str:
    """`change_consent`'s checks before anything is written (rules 1 to 3: 403, 404, 422 as
    `ApiProblem`); the policy version the user was shown."""
    _require_self(identity, user_id, write=True)
    version = svc.policy.version_at(datetime.now(UTC))
    if version is None or version.purpose(purpose) is None:
        known = ", ".join(p.key for p in version.purposes) if version else "none"
        raise problem(
            404, f"unknown purpose {purpose!r}; known: {known}", location="path", field="purpose"
        )
    return _shown_version(svc, shown_policy, version.version)


def change_of(user_id: str, purpose: str, choice: Choice, shown: str) -> ConsentChange:
    """The change a PUT asks for, made by the current request."""
    return ConsentChange(
        user_id,
        purpose,
        choice,
        "api",
        Evidence(origin=PUT_ORIGIN, client="api", shown_version=shown),
        request_id=current_request_id(),
    )


async def committed_body(svc: Services, change: ConsentChange) -> bytes:
    """Record `change` (checked) with the group commit and, once committed, the body of
    `change_consent`'s answer; a 404 `ApiProblem` when the platform does not know the user
    (rule 4: nothing was recorded)."""
    event = await asyncio.wrap_future(svc.committer.submit(change))
    if event is None:
        raise problem(404, f"no user {change.user_id!r} is known", location="path", field="user_id")
    return _json_bytes(_event_view(event))


def _event_view(event: ConsentEventRecord) -> EventView:
    return EventView(
        event_id=event.event_id,
        purpose=event.purpose,
        choice=event.choice,
        at=event.at,
        source=event.source,
        policy_version=event.policy_version,
        evidence_origin=event.evidence.origin,
        evidence_client=event.evidence.client,
        evidence_shown_version=event.evidence.shown_version,
        recorded_at=event.recorded_at,
    )


@router.get(
    "/users/{user_id}/consent/history",
    response_model=HistoryView,
    responses=error_responses(401, 403),
)
def consent_history(
    user_id: UserIdPath, request: Request, svc: ServicesDep, identity: BearerIdentity
) -> HistoryView:
    """Every consent event of the user, oldest first."""
    _require_self(identity, user_id)
    _apply_gpc(request, svc, identity, "GET /v1/users/{id}/consent/history")
    return HistoryView(
        user_id=user_id, events=[_event_view(e) for e in svc.ledger.history(user_id)]
    )


@router.post(
    "/consent/check", response_model=CheckView, responses=error_responses(400, 401, 403, 415)
)
def check_consent(body: CheckBody, svc: ServicesDep, identity: BearerIdentity) -> CheckView:
    """Resolve one purpose for up to 100,000 users at once; answers in the order asked."""
    if identity.role != "admin" and any(u != identity.subject for u in body.user_ids):
        raise problem(403, "only an admin token may check other users")
    if not any(v.purpose(body.purpose) for v in svc.policy.versions):
        raise unprocessable(
            BadInput(
                Problem(
                    "body",
                    None,
                    "purpose",
                    f"unknown purpose {body.purpose!r}; no policy version defines it",
                )
            ),
            "body",
        )
    when = (body.at or datetime.now(UTC)).astimezone(UTC)
    try:
        decisions, known = svc.ledger.check(body.purpose, when, body.user_ids)
    except BadInput as exc:
        raise unprocessable(exc, "body") from None
    return CheckView(
        purpose=body.purpose,
        at=when,
        decisions=[
            CheckDecision(
                user_id=d.user_id,
                decision=d.decision,
                rule=d.rule.value,
                since=d.since,
                policy_version=d.policy_version,
                known_user=k,
            )
            for d, k in zip(decisions, known, strict=True)
        ],
    )


@router.get(
    "/users/{user_id}/signals",
    response_model=SignalsView,
    responses=error_responses(401, 403),
)
def user_signals(
    user_id: UserIdPath,
    svc: ServicesDep,
    identity: BearerIdentity,
    at: Annotated[
        InstantOrDate | None, Query(description="The instant to answer for; default now.")
    ] = None,
) -> SignalsView:
    """The author's AIPREF Content-Usage, Bluesky-style intents and TDMRep reservation."""
    _require_self(identity, user_id)
    return signals_for(svc, user_id, at or datetime.now(UTC))
