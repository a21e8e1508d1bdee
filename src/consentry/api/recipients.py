"""`GET /v1/users/{user_id}/recipients`: who received a user's posts, and what became of
them after an opt-out (GDPR Art. 19)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from consentry.api.validation import UserIdPath
from consentry.instants import rfc3339
from consentry.revocation import recipients_of
from consentry.serving.problems import error_responses, problem
from consentry.serving.services import BearerIdentity, Services, services

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["consent"])
ServicesDep = Annotated[Services, Depends(services)]


class RecipientRevocations(BaseModel):
    total: int
    pending: int = Field(description="Not confirmed yet (overdue ones included).")
    overdue: int
    confirmed: int


class Recipient(BaseModel):
    licensee: str
    purpose: str
    deliveries: int
    posts: int = Field(description="Distinct posts of the user it received.")
    first_delivered_at: str
    last_delivered_at: str
    revocations: RecipientRevocations


class RecipientsView(BaseModel):
    user_id: str
    at: str
    recipients: list[Recipient]


@router.get(
    "/users/{user_id}/recipients",
    summary="Licensees that received the user's posts; revocations pending and confirmed",
    response_model=RecipientsView,
    responses=error_responses(401, 403),
)
def user_recipients(
    user_id: UserIdPath, identity: BearerIdentity, svc: ServicesDep
) -> dict[str, Any]:
    """1. A user token reads only its own recipients; an admin token reads anyone's (403
    otherwise). 2. One entry per licensee: purpose, deliveries, distinct posts, first and
    last delivery instant, and the revocations of those posts by state."""
    if not identity.may_act_on(user_id):
        raise problem(403, "this token may not read another user's recipients")
    now = datetime.now(UTC)
    return {
        "user_id": user_id,
        "at": rfc3339(now),
        "recipients": recipients_of(svc.settings, svc.store, svc.policy, user_id, now=now),
    }
