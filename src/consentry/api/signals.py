"""Public preference signals: robots.txt, TDMRep, GPC, RSL; and `Content-Usage` on a
platform's own responses (an ASGI middleware and a plain function)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.api.services import Services, services
from consentry.delivery.keyset import KeySet
from consentry.ledger.signals import (
    author_signals,
    gpc_document,
    robots_txt,
    rsl_license,
    tdmrep_document,
)

__all__ = ["ContentUsageMiddleware", "content_usage_for", "router"]

router = APIRouter(tags=["signals"])


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/robots.txt", response_class=PlainTextResponse)
def robots(request: Request, svc: Services = Depends(services)) -> PlainTextResponse:
    """AIPREF `Content-Usage` rules and the RSL `License:` pointer."""
    version = svc.policy.version_at(datetime.now(UTC))
    return PlainTextResponse(robots_txt(_base_url(request), version))


@router.get("/.well-known/tdmrep.json")
def tdmrep(request: Request) -> JSONResponse:
    """TDMRep: text-and-data-mining rights are reserved; terms at /license.xml."""
    return JSONResponse(tdmrep_document(_base_url(request)))


@router.get("/.well-known/gpc.json")
def gpc(svc: Services = Depends(services)) -> JSONResponse:
    """Global Privacy Control support resource (lastUpdate: the policy in force)."""
    version = svc.policy.version_at(datetime.now(UTC))
    updated = version.effective_from if version else datetime.now(UTC)
    return JSONResponse(gpc_document(updated))


@router.get(
    "/license.xml",
    response_class=Response,
    responses={
        200: {
            "description": "The RSL document.",
            "content": {"application/rsl+xml": {"schema": {"type": "string"}}},
        }
    },
)
def license_xml(request: Request, svc: Services = Depends(services)) -> Response:
    """RSL 1.0 description of the AI-training licence terms."""
    version = svc.policy.version_at(datetime.now(UTC))
    return Response(rsl_license(_base_url(request), version), media_type="application/rsl+xml")


def content_usage_for(svc: Services, author_id: str, at: datetime | None = None) -> str:
    """The `Content-Usage` header value for content by `author_id` (resolved now by default).

    1. An author the ledger has never been told about gets "" (no header): their facts are
       unknown, so any preference we stated would be a guess; robots.txt's site-wide rule
       still applies.
    2. Otherwise the author's resolved consent at `at`, as an AIPREF dictionary.
    """
    if svc.ledger.subject(author_id) is None:
        return ""
    when = at or datetime.now(UTC)
    decisions = svc.ledger.resolve_all(author_id, when)
    return author_signals(svc.policy.version_at(when), decisions).content_usage


class ContentUsageMiddleware:
    """Adds `Content-Usage` to responses that serve one author's content.

    `author_of(scope)` tells, from the request, whose content the response carries (None:
    not author content, no header). The header is the author's AIPREF preferences now
    (none for an author the ledger does not know, see `content_usage_for`).
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
        # Resolution reads the store: keep it off the event loop.
        value = await anyio.to_thread.run_sync(content_usage_for, self.services, author)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start" and value:
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"content-usage", value.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)


@router.get("/.well-known/consentry-keys.json")
def signing_keys(svc: Services = Depends(services)) -> JSONResponse:
    """The Ed25519 public keys, with their history and the payload kinds each signs (JWKS)."""
    return JSONResponse(KeySet.for_home(svc.settings.home).jwks())
