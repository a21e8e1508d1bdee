"""Security headers on every response: what a browser may load, frame and send on.

1. `Content-Security-Policy`: scripts, styles, fonts and fetches from this site only (no
   inline script, no inline style, no plugin), images from this site or `data:` URLs, forms
   post only here, no `<base>`, and no page may be framed (`frame-ancestors 'none'`). Swagger
   UI (`/docs`) works under it: it is started by a static script, and draws its styles
   through the DOM, which the policy allows.
2. `X-Frame-Options: DENY` for browsers without `frame-ancestors`.
3. `Referrer-Policy: same-origin`: other sites never learn our URLs; our own forms keep the
   Referer that the CSRF check may read.
4. `X-Content-Type-Options: nosniff`: a response is only ever what its Content-Type says.

A response that sets one of these headers itself keeps its own value (an evidence report
with its inline styles, `consentry.web.scraping.EVIDENCE_CSP`).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "API_PREFIX",
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "PagesOnly",
    "SecurityHeadersMiddleware",
]

API_PREFIX: Final = "/v1/"
"""Paths of the JSON API: no page, no session cookie."""

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS: Final[dict[str, str]] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}

_ENCODED: Final = tuple(
    (name.lower().encode("ascii"), value.encode("ascii"))
    for name, value in SECURITY_HEADERS.items()
)


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every HTTP response (the app's outermost layer but for
    Starlette's own error handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in _ENCODED if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PagesOnly:
    """Runs the middleware `inner` (built around the app with `options`) for every request
    but the API's (`/v1/…`), which go straight to the app: the API authenticates with
    bearer tokens, so page sessions would only cost it a cookie parse per request."""

    def __init__(self, app: ASGIApp, /, *, inner: Any, **options: Any) -> None:
        self.app = app
        self.wrapped: ASGIApp = inner(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        await self.wrapped(scope, receive, send)
