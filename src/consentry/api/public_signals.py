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
4. The serving process itself reuses an author's resolved signals for at most
   `CONSENTRY_SIGNALS_CACHE_MS` (1 s by default), never longer than the answer's own
   max-age nor so long that a cache in front could keep it past the SLA (`reuse_seconds`,
   `consentry.serving.signals_cache`); a consent change this process records is answered
   at once.

Speed: `PublicSignalsFastPath` answers these GET and HEAD requests before the app's routing
(inside the request observer and the security headers, so they get the request id, the log
line, the metrics and the security headers of every request); the routes below remain for
the schema and for everything the fast path leaves to them. Both send `public_answer`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute
from starlette.types import Receive, Scope, Send

from consentry.api.signals import author_signals_now
from consentry.api.validation import NO_CONTROL, USER_ID_MAX_LENGTH, UserIdPath
from consentry.ledger.signals import (
    AuthorSignals,
    answer_lifetimes,
    author_header_fields,
    meta_tags,
    signals_etag,
    site_default_signals,
)
from consentry.serving.fast_path import FastPath
from consentry.serving.services import Services, run_read, services
from consentry.serving.signals_cache import CachedSignals

__all__ = ["PublicSignals", "PublicSignalsFastPath", "public_answer", "router"]

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


RawHeaders = list[tuple[bytes, bytes]]
Answer = tuple[int, RawHeaders, bytes]
"""Status, header fields and body, as sent (the request id and security headers are added
by the app's outer layers)."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """The answers for one set of signals, base URL, representation and max-age, rendered
    once through Starlette's `Response` (so they are exactly what a route would send)."""

    etag: str
    headers: RawHeaders
    """Of a 200, for GET and HEAD alike (HEAD's `Content-Length` is GET's)."""
    body: bytes
    not_modified: RawHeaders
    """Of a 304: the same fields, `ETag` and `Cache-Control`, no `Content-Length`."""

    def answer(self, method: str, if_none_match: str | None) -> Answer:
        """304 when `If-None-Match` names the tag; else 200, with no body for HEAD."""
        if _matches(if_none_match, self.etag):
            return 304, self.not_modified, b""
        return 200, self.headers, b"" if method == "HEAD" else self.body


def _prepare(
    signals: AuthorSignals, base: str, representation: Literal["json", "html"], max_age: int
) -> Prepared:
    """Render the answers (see the module's caching rules)."""
    fields = author_header_fields(signals, base)
    etag = signals_etag(fields, representation)
    headers = dict(fields)
    headers["etag"] = etag
    headers["cache-control"] = f"public, max-age={max_age}"
    if representation == "json":
        content = _body(signals, fields).model_dump_json().encode()
        media_type = "application/json"
    else:
        content = meta_tags(fields).encode()
        media_type = "text/html; charset=utf-8"
    ok = Response(content, headers=headers, media_type=media_type)
    not_modified = Response(status_code=304, headers=headers)
    return Prepared(etag, ok.raw_headers, bytes(ok.body), not_modified.raw_headers)


_PREPARED_MAX: Final = 1024
_prepared_memo: dict[tuple[object, ...], Prepared] = {}


def _prepared(
    signals: AuthorSignals, base: str, representation: Literal["json", "html"], max_age: int
) -> Prepared:
    """`_prepare`, remembered by its inputs: the answers are a function of the signals'
    values (not of the author), and authors share a few sets of them, so each set is
    rendered once per base URL, representation and max-age (the memo is reset when full:
    base URLs come from `Host` headers)."""
    key = (signals.content_usage, tuple(signals.aipref.items()), signals.tdm_reservation,
           base, representation, max_age)  # fmt: skip
    found = _prepared_memo.get(key)
    if found is None:
        if len(_prepared_memo) >= _PREPARED_MAX:
            _prepared_memo.clear()
        found = _prepared_memo[key] = _prepare(signals, base, representation, max_age)
    return found


_BASE_URLS_MAX: Final = 1024
_base_urls: dict[tuple[object, ...], str] = {}


def _base_url(scope: Scope) -> str:
    """`Request(scope).base_url` as a string, remembered by what it is made of: the scheme,
    the server, the first `Host` header and the root path (reset when full: `Host` headers
    come from clients)."""
    host = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
            break
    server = scope.get("server")
    root = scope.get("app_root_path", scope.get("root_path", ""))
    # The server as a tuple: some servers (and test clients) give a list.
    key = (scope.get("scheme", "http"), None if server is None else tuple(server), host, root)
    found = _base_urls.get(key)
    if found is None:
        if len(_base_urls) >= _BASE_URLS_MAX:
            _base_urls.clear()
        found = _base_urls[key] = str(Request(scope).base_url)
    return found


async def _signals_of(svc: Services, author_id: str | None) -> CachedSignals:
    """The author's signals (`None`: the site default) and their answer's max-age, from the
    process's cache while it may be reused (`consentry.serving.signals_cache`), else
    resolved now and kept for `reuse_seconds`."""
    cache = svc.signals_cache
    found = cache.get(author_id)
    if found is not None:
        return found
    mark = cache.mark()
    now = datetime.now(UTC)
    if author_id is None:
        signals = site_default_signals()
    else:
        signals = await run_read(svc, author_signals_now, svc, author_id, now)
    max_age, reuse = answer_lifetimes(
        svc.settings.signals_max_age,
        svc.settings.signals_cache_ms,
        svc.policy.revocation_sla_at(now),
        now,
    )
    return cache.put(author_id, signals, max_age, reuse, mark=mark)


async def _author_of_post(svc: Services, post_id: str) -> str | None:
    """The post's author; None for a post the lake lacks (it gets the site default).

    The index is looked up on the event loop, the live snapshot's pointer checked there
    too once a second (`PostAuthors.current`); only a rebuild from a new snapshot, seconds
    for millions of posts, goes to a thread. (Sending every lookup made while the check
    was due to the thread pool cost a burst of thread hand-offs, and new threads, every
    second in every worker.)"""
    index = svc.post_authors.current()
    if index is None:
        return await run_in_threadpool(svc.post_authors.author_of, post_id)
    return index.author_of(post_id)


async def public_answer(
    svc: Services,
    scope: Scope,
    kind: Literal["authors", "posts"],
    key: str,
    representation: Literal["json", "html"],
    if_none_match: str | None,
) -> Answer:
    """The answer to a request for the signals of author (or post) `key`: what the routes
    and the fast path both send.

    1. A post's author is found in the post index; a post the lake lacks has none.
    2. The author's signals come from the cache or the ledger (`_signals_of`); an author
       the ledger does not know, and a post without an author, get the site default.
    3. `tdm-policy` is on `CONSENTRY_PUBLIC_URL` when set, else on the request's base URL.
    """
    author = key if kind == "authors" else await _author_of_post(svc, key)
    cached = await _signals_of(svc, author)
    base = svc.settings.public_url or _base_url(scope)
    prepared = _prepared(cached.signals, base, representation, cached.max_age)
    return prepared.answer(scope["method"], if_none_match)


class _Sent(Response):
    """An `Answer` as a route's response: its status, header fields and body as they are."""

    def __init__(self, answer: Answer) -> None:
        status, headers, body = answer
        self.status_code = status
        self.raw_headers = list(headers)
        self.body = body
        self.background = None


# Each route is registered for GET and for HEAD. HEAD is left out of the OpenAPI schema:
# an answer without a body cannot be described by the body the schema gives GET, nor can
# its refusals carry a problem document; each GET operation's description states it.
_HEAD_NOTE = "\n\nHEAD answers the same status and header fields without a body."


async def author_signals(
    author_id: UserIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The author's preference signals: header fields and JSON. An author the platform
    never told Consentry about gets the site default."""
    return _Sent(await public_answer(svc, request.scope, "authors", author_id, "json",
                                     if_none_match))  # fmt: skip


async def author_meta(
    author_id: UserIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The author's signals as HTML `<meta>` elements for a page's `<head>` (robots `noai,
    noimageai`, `tdm-reservation`, `tdm-policy`; empty where training is allowed)."""
    return _Sent(await public_answer(svc, request.scope, "authors", author_id, "html",
                                     if_none_match))  # fmt: skip


async def post_signals(
    post_id: PostIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The signals of a post's author (found through the lake's posts table): header fields
    and JSON. A post the lake does not hold gets the site default."""
    return _Sent(await public_answer(svc, request.scope, "posts", post_id, "json",
                                     if_none_match))  # fmt: skip


async def post_meta(
    post_id: PostIdPath, request: Request, svc: ServicesDep, if_none_match: IfNoneMatch = None
) -> Response:
    """The signals of a post's author as HTML `<meta>` elements."""
    return _Sent(await public_answer(svc, request.scope, "posts", post_id, "html",
                                     if_none_match))  # fmt: skip


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


PREFIX: Final = router.prefix + "/"
_KEY: Final = re.compile(NO_CONTROL)
_NAMES: Final = {
    ("authors", "json"): author_signals.__name__,
    ("authors", "html"): author_meta.__name__,
    ("posts", "json"): post_signals.__name__,
    ("posts", "html"): post_meta.__name__,
}
_BY_NAME: Final = {getattr(route, "name", None): route for route in router.routes}
_ROUTES: Final[dict[tuple[str, str, str], BaseRoute]] = {
    (kind, representation, method): _BY_NAME[name + ("_head" if method == "HEAD" else "")]
    for (kind, representation), name in _NAMES.items()
    for method in ("GET", "HEAD")
}
"""The route each request the fast path answers would have matched (its template names the
request in the log line and the metrics)."""


_Request = tuple[Literal["authors", "posts"], str, Literal["json", "html"], str | None]
"""(kind, id, representation, If-None-Match) of a request the fast path answers."""


class PublicSignalsFastPath(FastPath[_Request]):
    """An ASGI middleware answering the public signals' GET and HEAD without the app's
    routing, dependencies and inner middleware (the endpoint's rate is a page view's).

    1. It handles only what the routes would answer 200 or 304 without a question:
       `GET`/`HEAD` of `/v1/public/signals/{authors|posts}/{id}` or `…/{id}/meta`, with no
       query string, no root path, at most one `If-None-Match`, and an id the routes accept
       (1 to 128 characters, no control character). Everything else — a bad id (422), a
       trailing slash, another method, a query — goes on to the app, as does a request
       whose answer fails (the store down): the routes answer those as they answer every
       request.
    2. The answer is `public_answer`, the routes' own, sent as is.
    3. It sits inside `RequestObserver` and `SecurityHeadersMiddleware`, which add the
       request id, the log line, the metrics and the security headers; it sets
       `scope["route"]` to the route it answers for, so the log line and the metrics name
       the same route template as for a routed request.
    """

    prefix = PREFIX

    def wanted(self, scope: Scope) -> _Request | None:
        return _wanted(scope)

    async def answer(self, scope: Scope, receive: Receive, send: Send, wanted: _Request) -> None:
        kind, key, representation, if_none_match = wanted
        try:
            status, headers, body = await public_answer(
                self.services, scope, kind, key, representation, if_none_match
            )
        except Exception:
            # Nothing was sent: the route answers it (and logs it) as every route does.
            await self.app(scope, receive, send)
            return
        scope["route"] = _ROUTES[kind, representation, scope["method"]]
        # A copy: an outer layer may add to the list it is given, and this one is shared by
        # every answer of its kind.
        start = {"type": "http.response.start", "status": status, "headers": list(headers)}
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _wanted(scope: Scope) -> _Request | None:
    """(kind, id, representation, If-None-Match) of a request the fast path answers; None
    for any other (see `PublicSignalsFastPath`)."""
    if (
        scope["method"] not in ("GET", "HEAD")
        or scope.get("query_string")
        or scope.get("root_path")
    ):
        return None
    kind, _, rest = scope["path"][len(PREFIX) :].partition("/")
    key, slash, tail = rest.partition("/")
    if slash and tail != "meta":
        return None
    if not key or len(key) > USER_ID_MAX_LENGTH or not _KEY.fullmatch(key):
        return None
    if_none_match = None
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            if if_none_match is not None:
                return None
            if_none_match = value.decode("latin-1")
    representation: Literal["json", "html"] = "html" if slash else "json"
    if kind == "authors":
        return "authors", key, representation, if_none_match
    if kind == "posts":
        return "posts", key, representation, if_none_match
    return None
