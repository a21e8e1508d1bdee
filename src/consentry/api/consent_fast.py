"""The consent API's two hot operations without FastAPI's routing and dependencies:
`GET /v1/users/{user_id}/consent` and `PUT /v1/users/{user_id}/consent/{purpose}`.

On a busy day most of the service's requests are these two, and most of their CPU went to
the framework (route matching, dependency solving, parameter and body validation, the
exception and exit-stack middleware) rather than to the ledger. `ConsentFastPath` is an ASGI
middleware, inside `RequestObserver` and `SecurityHeadersMiddleware` as
`consentry.api.public_signals.PublicSignalsFastPath` is, so its answers get the request id,
the log line, the latency metric and the security headers of every request.

1. It answers only requests whose answer the routes would give without a refusal: the exact
   path, no query string, no root path, each header it reads (`Authorization`, `Sec-GPC`,
   `Content-Type`, `X-Consentry-Shown-Policy`) at most once, a user id the routes accept, a
   bearer token that passes `verify_token_memo` and may act on that user, and for a PUT a
   JSON body that is exactly `{"choice": "allow"|"deny"}`, a purpose of the policy in force
   and a published shown version. Anything else — every refusal (401, 403, 404, 415, 422),
   a query such as `?at=`, a body with another shape — goes on to the routes with the body
   it read handed on unchanged, and they answer it as they answer every request.
2. What it sends is built by the routes' own code (`consent_body`, `shown_version_for`,
   `change_of`, `committed_body` in `consentry.api.consent`): the same bytes, the same
   `Content-Length` and `Content-Type`, the same GPC recording, the same group commit (a
   2xx PUT still means the event and its audit event are committed).
3. It sets `scope["route"]` and `scope["endpoint"]` as the router would, so the log line and
   the metric name the route's template and an error is answered as a routed one.
4. Before anything is written, a failure (the store down on a GET) leaves the request to
   the routes, which answer it as every route does. Once it writes (a GPC signal, the
   change), a failure is raised as a route's would be: `RequestObserver` logs it and answers
   500; a user the platform does not know is the route's 404 problem.
"""

from __future__ import annotations

import json
import re
from typing import Final

from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from consentry.api import consent
from consentry.api.validation import NO_CONTROL, USER_ID_MAX_LENGTH
from consentry.errors import BadInput
from consentry.policy import Choice
from consentry.serving.auth import Identity, InvalidTokenError
from consentry.serving.fast_path import FastPath
from consentry.serving.problems import ApiProblem, answer
from consentry.serving.services import Services, verify_token_memo

__all__ = ["PREFIX", "ConsentFastPath", "Wanted", "wanted"]

PREFIX: Final = "/v1/users/"
_CONSENT: Final = "/consent"
_KEY: Final = re.compile(NO_CONTROL)
_JSON_HEADERS: Final = (b"content-type", consent.JSON.encode("latin-1"))

_READ: Final = b"authorization", b"sec-gpc", b"content-type", b"x-consentry-shown-policy"
"""The header fields the routes read (each must come at most once to be answered here)."""

_BY_NAME: Final = {getattr(route, "name", None): route for route in consent.router.routes}
_GET_ROUTE: Final[BaseRoute] = _BY_NAME[consent.read_consent.__name__]
_PUT_ROUTE: Final[BaseRoute] = _BY_NAME[consent.change_consent.__name__]
"""The routes these requests would have matched (their templates name them in the log line
and the metrics)."""

_CHOICES: Final = {c.value: c for c in Choice}

Wanted = tuple[str, str | None, dict[bytes, str]]
"""(user id, purpose — None for the GET —, the header fields of `_READ` present)."""


def wanted(scope: Scope) -> Wanted | None:
    """What a request the fast path may take asks for; None for any other (see rule 1 of
    the module docstring: the checks that need no service)."""
    method = scope["method"]
    if method not in ("GET", "PUT") or scope.get("query_string") or scope.get("root_path"):
        return None
    user_id, slash, rest = scope["path"][len(PREFIX) :].partition("/")
    if not slash or not user_id or len(user_id) > USER_ID_MAX_LENGTH:
        return None
    if not _KEY.fullmatch(user_id):
        return None
    purpose: str | None = None
    if method == "GET":
        if "/" + rest != _CONSENT:
            return None
    else:
        head, slash, purpose = rest.partition("/")
        if "/" + head != _CONSENT or not slash or not purpose or "/" in purpose:
            return None
    headers: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _READ:
            if name in headers:
                return None
            headers[name] = value.decode("latin-1")
    return user_id, purpose, headers


def _identity(
    svc: Services, headers: dict[bytes, str], user_id: str, *, write: bool
) -> Identity | None:
    """The caller, when their bearer token passes and may act on `user_id` (as the routes'
    `bearer_identity` and `_require_self` decide); None for anything they would refuse."""
    scheme, credentials = get_authorization_scheme_param(headers.get(b"authorization"))
    if not (scheme and credentials) or scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token:
        return None
    try:
        identity = verify_token_memo(svc.platform_secret, token)
    except InvalidTokenError:
        return None
    if identity.role == "user" and identity.subject == user_id:
        return identity
    if identity.role == "admin" and not write:
        return identity
    return None


def _gpc(headers: dict[bytes, str]) -> bool:
    """`consent.gpc_requested`, on the header fields read."""
    return headers.get(b"sec-gpc", "").strip() == "1"


def _choice(body: bytes) -> Choice | None:
    """The choice of a body that is exactly `{"choice": "allow"|"deny"}` (what `ChoiceBody`
    accepts from a JSON object); None for any other body (the route says what is wrong)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or len(parsed) != 1:
        return None
    choice = parsed.get("choice")
    return _CHOICES.get(choice) if isinstance(choice, str) else None


class ConsentFastPath(FastPath[Wanted]):
    """See the module docstring."""

    prefix = PREFIX

    def wanted(self, scope: Scope) -> Wanted | None:
        return wanted(scope)

    async def answer(self, scope: Scope, receive: Receive, send: Send, wanted: Wanted) -> None:
        user_id, purpose, headers = wanted
        if purpose is None:
            await self._read(scope, receive, send, user_id, headers)
        else:
            await self._change(scope, receive, send, user_id, purpose, headers)

    async def _read(
        self, scope: Scope, receive: Receive, send: Send, user_id: str, headers: dict[bytes, str]
    ) -> None:
        svc = self.services
        identity = _identity(svc, headers, user_id, write=False)
        if identity is None:
            await self.app(scope, receive, send)
            return
        gpc = identity.role == "user" and _gpc(headers)
        if gpc:
            # It writes: from here on a failure is the route's own (rule 4).
            _routed(scope, _GET_ROUTE)
            body = await consent.consent_body(svc, identity, user_id, gpc=True, at=None)
        else:
            try:
                body = await consent.consent_body(svc, identity, user_id, gpc=False, at=None)
            except Exception:
                # Nothing was written or sent: the route answers it as every route does.
                await self.app(scope, receive, send)
                return
            _routed(scope, _GET_ROUTE)
        await _send_json(send, body)

    async def _change(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        user_id: str,
        purpose: str,
        headers: dict[bytes, str],
    ) -> None:
        svc = self.services
        kind = headers.get(b"content-type", "").split(";")[0].strip().lower()
        identity = _identity(svc, headers, user_id, write=True)
        if kind != consent.JSON or identity is None:
            await self.app(scope, receive, send)
            return
        messages, body = await _read_body(receive)
        replay = _replaying(messages, receive)
        choice = _choice(body) if body is not None else None
        if choice is None:
            await self.app(scope, replay, send)
            return
        try:
            shown = consent.shown_version_for(
                svc, identity, user_id, purpose, headers.get(b"x-consentry-shown-policy")
            )
            change = consent.change_of(user_id, purpose, choice, shown)
            svc.ledger.check_change(change)
        except (ApiProblem, BadInput):
            await self.app(scope, replay, send)
            return
        # From here on it writes: a failure is the route's own (rule 4).
        _routed(scope, _PUT_ROUTE)
        if _gpc(headers):
            await run_in_threadpool(consent.record_gpc, svc, identity, consent.PUT_ORIGIN)
        try:
            answered = await consent.committed_body(svc, change)
        except ApiProblem as exc:
            await answer(Request(scope, replay), exc)(scope, replay, send)
            return
        await _send_json(send, answered)


def _routed(scope: Scope, route: BaseRoute) -> None:
    """Mark the request as the router would have on matching `route`."""
    scope["route"] = route
    scope["endpoint"] = getattr(route, "endpoint", None)


async def _send_json(send: Send, body: bytes) -> None:
    """Start and body of a 200 answer as `Response(body, media_type="application/json")`
    sends them (`Content-Length`, then `Content-Type`)."""
    headers = [(b"content-length", str(len(body)).encode("latin-1")), _JSON_HEADERS]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> tuple[list[Message], bytes | None]:
    """Every message of the request's body as received, and the body (None when the client
    went away first)."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, in order, then what `receive` gives."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
