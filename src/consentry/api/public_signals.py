"""Public preference signals per author and per post: no token, cacheable, for an edge
(nginx `auth_request`, a CDN) to copy onto a platform's pages.

Each answer states the author's preferences as header fields (`author_header_fields`:
`Content-Usage`, and `tdm-reservation`, `tdm-policy`, `X-Robots-Tag: noai, noimageai`
where rights are reserved) and again in its body: JSON, or the same statements as HTML
`<meta>` elements (`/meta`). It reveals the preference only — never the reasons, the
region or the age. An author the ledger does not know, and a post the lake does not hold,
get the site default (`site_default_signals`).

Caching:
1. `ETag` is strong, computed from the header fields and the representation
   (`signals_etag`); `If-None-Match` with a matching tag gets 304 with the same headers.
2. `Cache-Control: public, max-age=N` with N = `cache_max_age`: at most
   `CONSENTRY_SIGNALS_MAX_AGE`, never more than the revocation SLA in force, so a cached
   "allowed" never outlives the deadline an opt-out must be honoured by.
3. `HEAD` answers the headers of `GET` (its `Content-Length` too) without a body.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from consentry.api.signals import author_signals_now
from consentry.api.validation import NO_CONTROL, USER_ID_MAX_LENGTH, UserIdPath
from consentry.ledger.signals import (
    AuthorSignals,
    author_header_fields,
    cache_max_age,
    meta_tags,
    signals_etag,
    site_default_signals,
)
from consentry.serving.services import Services, run_read, services

__all__ = ["PublicSignals", "router"]

router = APIRouter(prefix="/v1/public/signals", tags=["public signals"])

ServicesDep = Annotated[Services, Depends(services)]

PostIdPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=USER_ID_MAX_LENGTH,
        pattern=NO_CONTROL,
        description="The platform's post id (1 to 128 characters, no control characters).",
    ),
]

IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="Entity tags from an earlier answer: 304 when one matches.",
    ),
]


class PublicSignals(BaseModel):
    """The preference signals for content by one author (the header fields, as JSON)."""

    content_usage: str | None = Field(
        description="The AIPREF `Content-Usage` dictionary, e.g. `train-ai=n`; null when no "
        "category is known (no header)."
    )
    aipref: dict[str, Literal["y", "n"]] = Field(
        description="AIPREF category -> `y` (allowed) or `n` (disallowed); unknown ones left out."
    )
    tdm_reservation: Literal[0, 1] = Field(
        description="TDMRep: 1 when text-and-data-mining rights are reserved (the "
        "`tdm-reservation: 1` header is sent); 0 when the author allows AI training (no "
        "header: the site-wide /.well-known/tdmrep.json still applies)."
    )
    tdm_policy: str | None = Field(
        description="The TDM Policy's URL (`tdm-policy`), where rights are reserved."
    )
    x_robots_tag: str | None = Field(
        description="`noai, noimageai` where AI training is refused (`X-Robots-Tag`)."
    )


_FIELD_HEADERS: dict[str, Any] = {
    "Content-Usage": "The AIPREF preferences (RFC 9651 dictionary), when any is known.",
    "tdm-reservation": "`1` where text-and-data-mining rights are reserved.",
    "tdm-policy": "The TDM Policy's URL, where rights are reserved.",
    "X-Robots-Tag": "`noai, noimageai` where AI training is refused.",
}
_CACHE_HEADERS: dict[str, Any] = {
    "ETag": "Strong entity tag of this answer (from the header fields).",
    "Cache-Control": "`public, max-age=N`: N at most CONSENTRY_SIGNALS_MAX_AGE and the "
    "revocation SLA in force.",
}


def _headers(described: dict[str, Any], required: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: {
            "description": text,
            "required": name in required,
            "schema": {"type": "string"},
        }
        for name, text in described.items()
    }


_DOCUMENTED = _headers({**_FIELD_HEADERS, **_CACHE_HEADERS}, ("ETag", "Cache-Control"))


def _responses(ok: dict[str, Any]) -> dict[int | str, Any]:
    return {
        200: {
            "description": "The signals, as header fields and in the body.",
            "headers": _DOCUMENTED,
        }
        | ok,
        304: {
            "description": "Not modified: `If-None-Match` named this answer's entity tag.",
            "headers": _DOCUMENTED,
        },
    }


_JSON_RESPONSES = _responses({"model": PublicSignals})
_HTML_RESPONSES = _responses({"content": {"text/html": {"schema": {"type": "string"}}}})


def _body(signals: AuthorSignals, fields: list[tuple[str, str]]) -> PublicSignals:
    values = dict(fields)
    return PublicSignals(
        content_usage=values.get("content-usage"),
        aipref=signals.aipref,
        tdm_reservation=1 if signals.tdm_reservation == 1 else 0,
        tdm_policy=values.get("tdm-policy"),
        x_robots_tag=values.get("x-robots-tag"),
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: `*`, or any listed tag equal to ours by weak comparison."""
    if if_none_match is None:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _answer(
    request: Request,
    svc: Services,
    signals: AuthorSignals,
    representation: Literal["json", "html"],
    if_none_match: str | None,
) -> Response:
    """The response for `signals` as `representation` (see the module's caching rules)."""
    base = svc.settings.public_url or str(request.base_url)
    fields = author_header_fields(signals, base)
    etag = signals_etag(fields, representation)
    now = datetime.now(UTC)
    max_age = cache_max_age(svc.settings.signals_max_age, svc.policy.revocation_sla_at(now), now)
    headers = dict(fields)
    headers["etag"] = etag
    headers["cache-control"] = f"public, max-age={max_age}"
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if representation == "json":
        content = _body(signals, fields).model_dump_json().encode()
        media_type = "application/json"
    else:
        content = meta_tags(fields).encode()
        media_type = "text/html; charset=utf-8"
    if request.method == "HEAD":
        headers["content-length"] = str(len(content))
        return Response(status_code=200, headers=headers, media_type=media_type)
    return Response(content, headers=headers, media_type=media_type)


async def _of_author(svc: Services, author_id: str) -> AuthorSignals:
    return await run_read(svc, author_signals_now, svc, author_id)


async def _of_post(svc: Services, post_id: str) -> AuthorSignals:
    """The signals of the post's author; the site default for a post the lake lacks."""
    if svc.post_authors.due():
        # The index may be rebuilt from a new snapshot: seconds for millions of posts,
        # which must not hold up the event loop.
        author = await run_in_threadpool(svc.post_authors.author_of, post_id)
    else:
        author = svc.post_authors.author_of(post_id)
    if author is None:
        return site_default_signals()
    return await _of_author(svc, author)


# Each route is registered for GET and for HEAD. HEAD is left out of the OpenAPI schema:
# an answer without a body cannot be described by the body the schema gives GET, nor can
# its refusals carry a problem document; each GET operation's description states it.
_HEAD_NOTE = "\n\nHEAD answers the same status and header fields without a body."


async def author_signals(
    author_id: UserIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The author's preference signals: header fields and JSON. An author the platform
    never told Consentry about gets the site default."""
    return _answer(request, svc, await _of_author(svc, author_id), "json", if_none_match)


async def author_meta(
    author_id: UserIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The author's signals as HTML `<meta>` elements for a page's `<head>` (robots `noai,
    noimageai`, `tdm-reservation`, `tdm-policy`; empty where training is allowed)."""
    return _answer(request, svc, await _of_author(svc, author_id), "html", if_none_match)


async def post_signals(
    post_id: PostIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The signals of a post's author (found through the lake's posts table): header fields
    and JSON. A post the lake does not hold gets the site default."""
    return _answer(request, svc, await _of_post(svc, post_id), "json", if_none_match)


async def post_meta(
    post_id: PostIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The signals of a post's author as HTML `<meta>` elements."""
    return _answer(request, svc, await _of_post(svc, post_id), "html", if_none_match)


for _path, _endpoint, _responses_of in (
    ("/authors/{author_id}", author_signals, _JSON_RESPONSES),
    ("/authors/{author_id}/meta", author_meta, _HTML_RESPONSES),
    ("/posts/{post_id}", post_signals, _JSON_RESPONSES),
    ("/posts/{post_id}/meta", post_meta, _HTML_RESPONSES),
):
    router.add_api_route(
        _path,
        _endpoint,
        methods=["GET"],
        response_class=Response,
        responses=_responses_of,
        description=inspect.cleandoc(_endpoint.__doc__ or "") + _HEAD_NOTE,
    )
    router.add_api_route(
        _path,
        _endpoint,
        methods=["HEAD"],
        name=f"{_endpoint.__name__}_head",
        response_class=Response,
        include_in_schema=False,
    )
