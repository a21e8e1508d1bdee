"""Public preference signals: robots.txt, TDMRep (with its ODRL policy), GPC, RSL; and the
`Content-Usage` and TDMRep header fields on a platform's own responses (an ASGI middleware
and plain functions)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.delivery.keyset import KeySet
from consentry.ledger.signals import (
    TDM_POLICY_PATH,
    AuthorSignals,
    author_header_fields,
    author_signals,
    gpc_document,
    robots_txt,
    rsl_license,
    site_default_signals,
    tdm_policy,
    tdmrep_document,
)
from consentry.serving.services import Services, services

__all__ = [
    "ContentUsageMiddleware",
    "author_signals_now",
    "content_usage_for",
    "router",
    "signal_headers_for",
]

router = APIRouter(tags=["signals"])


def _content(media_type: str, description: str, schema: dict[str, Any]) -> dict[int | str, Any]:
    return {200: {"description": description, "content": {media_type: {"schema": schema}}}}


class TdmRepEntry(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    location: str
    tdm_reservation: int = Field(alias="tdm-reservation")
    tdm_policy: str = Field(alias="tdm-policy")


class GpcDocument(BaseModel):
    gpc: bool
    lastUpdate: str  # noqa: N815 - the GPC specification's name


class Jwk(BaseModel):
    model_config = ConfigDict(extra="allow")
    kty: str
    crv: str
    x: str
    kid: str


class KeysDocument(BaseModel):
    keys: list[Jwk]


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get(
    "/robots.txt",
    response_class=PlainTextResponse,
    responses=_content("text/plain", "robots.txt with AIPREF rules.", {"type": "string"}),
)
def robots(request: Request, svc: Services = Depends(services)) -> PlainTextResponse:
    """AIPREF `Content-Usage` rules and the RSL `License:` pointer."""
    version = svc.policy.version_at(datetime.now(UTC))
    return PlainTextResponse(robots_txt(_base_url(request), version))


@router.get("/.well-known/tdmrep.json", response_model=list[TdmRepEntry])
def tdmrep(request: Request) -> JSONResponse:
    """TDMRep: text-and-data-mining rights are reserved everywhere; the TDM Policy (ODRL) is
    at /policies/tdm.json."""
    return JSONResponse(tdmrep_document(_base_url(request)))


@router.get(
    TDM_POLICY_PATH,
    response_class=Response,
    responses=_content(
        "application/ld+json",
        "The TDM Policy: an ODRL 2.2 Offer with the TDMRep profile.",
        {"type": "object"},
    ),
)
def tdm_policy_document(request: Request) -> Response:
    """TDMRep TDM Policy: mining needs a licence (consent) and its fee (compensation)."""
    body = json.dumps(tdm_policy(_base_url(request)), indent=2)
    return Response(body, media_type="application/ld+json")


@router.get("/.well-known/gpc.json", response_model=GpcDocument)
def gpc(svc: Services = Depends(services)) -> JSONResponse:
    """Global Privacy Control support resource (lastUpdate: the policy in force)."""
    version = svc.policy.version_at(datetime.now(UTC))
    updated = version.effective_from if version else datetime.now(UTC)
    return JSONResponse(gpc_document(updated))


@router.get(
    "/license.xml",
    response_class=Response,
    responses=_content("application/rsl+xml", "The RSL document.", {"type": "string"}),
)
def license_xml(request: Request, svc: Services = Depends(services)) -> Response:
    """RSL 1.0 description of the AI-training licence terms (`server="…"` only when
    CONSENTRY_LICENSE_SERVER names a licence server)."""
    version = svc.policy.version_at(datetime.now(UTC))
    document = rsl_license(_base_url(request), version, server=svc.settings.license_server)
    return Response(document, media_type="application/rsl+xml")


def author_signals_now(svc: Services, author_id: str, at: datetime | None = None) -> AuthorSignals:
    """The author's signals from their resolved consent at `at` (default now).

    1. An author the ledger knows: `author_signals` of their decisions under the version in
       force then (one statement reads their facts and choices).
    2. An author the ledger was never told about: `site_default_signals`, what robots.txt
       and tdmrep.json already say for every path; nothing is guessed about them.
    """
    when = at or datetime.now(UTC)
    decisions = svc.ledger.resolve_known(author_id, when)
    if decisions is None:
        return site_default_signals()
    return author_signals(svc.policy.version_at(when), decisions)


def content_usage_for(svc: Services, author_id: str, at: datetime | None = None) -> str:
    """The `Content-Usage` header value for content by `author_id` ("" when no category is
    known: no header)."""
    return author_signals_now(svc, author_id, at).content_usage


def signal_headers_for(
    svc: Services, author_id: str, base_url: str, at: datetime | None = None
) -> list[tuple[str, str]]:
    """The header fields for content by `author_id` (`author_header_fields` of
    `author_signals_now`): `Content-Usage`, and `tdm-reservation`, `tdm-policy` and
    `X-Robots-Tag` where the author's rights are reserved."""
    return author_header_fields(author_signals_now(svc, author_id, at), base_url)


class ContentUsageMiddleware:
    """Adds `Content-Usage` (and TDMRep's fields and `X-Robots-Tag` where rights are reserved) to
    responses that serve one author's content.

    `author_of(scope)` tells, from the request, whose content the response carries (None:
    not author content, no header). The fields are `signal_headers_for` the author now;
    `tdm-policy` is absolute, on `CONSENTRY_PUBLIC_URL` when set, else on the request's
    own base URL.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        services: Services,
        author_of: Callable[[Scope], str | None],
    ) -> None:
        self.app = app
        self.services = services
        self.author_of = author_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        author = self.author_of(scope)
        if author is None:
            await self.app(scope, receive, send)
            return
        base = self.services.settings.public_url or str(Request(scope).base_url)
        # Resolution reads the store: keep it off the event loop.
        fields = await anyio.to_thread.run_sync(signal_headers_for, self.services, author, base)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start" and fields:
                headers: list[Any] = list(message.get("headers", []))
                headers += [(name.encode(), value.encode("ascii")) for name, value in fields]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


@router.get("/.well-known/consentry-keys.json", response_model=KeysDocument)
def signing_keys(svc: Services = Depends(services)) -> JSONResponse:
    """The Ed25519 public keys, with their history and the payload kinds each signs (JWKS)."""
    return JSONResponse(KeySet.for_home(svc.settings.home).jwks())
