"""What the service tells its operators: a request id and one log line per request, the
latency histogram, `/metrics` in Prometheus' text format.

`RequestObserver` is an ASGI middleware (inside the security headers, outside everything
else):

1. The request id is the caller's `X-Request-Id` when it is a sane token, else a new one;
   it is set for the request's code (`consentry.observe.context`), returned in the
   response's `X-Request-Id` and written in its log line, its audit events and its alerts.
2. When the response ends: one `http.request` log line (method, route template, status,
   milliseconds; never the path, which may name a user) and one observation of
   `consentry_http_request_duration_seconds{route, method, status}`.
3. An error nothing else handled is logged with its traceback and answered 500 as a
   problem (or an error page for a browser), with the request id.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from consentry.observe.context import REQUEST_ID_HEADER, request_id_from, using_request_id
from consentry.observe.logs import log_event
from consentry.observe.metrics import exposition, families
from consentry.observe.state import StateCollector
from consentry.serving.problems import ApiProblem, answer, error_responses, problem
from consentry.serving.services import BearerIdentity, Services, services

__all__ = ["RequestObserver", "router"]

_log = logging.getLogger("consentry.http")
_HEADER: Final = REQUEST_ID_HEADER.lower().encode("ascii")


def _route_of(scope: Scope) -> str:
    """The matched route's template (`/v1/users/{user_id}/consent`), `<mount>/{path}` for a
    mount, `unmatched` when nothing matched."""
    route = scope.get("route")
    if isinstance(route, Mount):
        return route.path + "/{path}"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObserver:
    """See the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._histogram: Any = None
        self._observers: dict[tuple[str, str, int], Any] = {}

    def _observer(self, route: str, method: str, status: int) -> Any:
        """The latency histogram's child for these labels, remembered (`labels` takes a
        lock and checks every label value on each call). As many as the histogram's own
        children: routes are templates, and it keeps one per method and status anyway."""
        histogram = families().http_duration
        if histogram is not self._histogram:
            self._histogram, self._observers = histogram, {}
        key = (route, method, status)
        found = self._observers.get(key)
        if found is None:
            found = self._observers[key] = histogram.labels(route, method, str(status))
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = None
        for name, value in scope.get("headers", ()):
            if name == _HEADER:
                sent = value.decode("latin-1")
                break
        request_id = request_id_from(sent)
        encoded = request_id.encode("ascii")
        status = 500
        started = False
        begun = time.perf_counter()

        async def send_observed(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", ()), (_HEADER, encoded)]
            await send(message)

        with using_request_id(request_id):
            try:
                await self.app(scope, receive, send_observed)
            except Exception as exc:
                _log.error(
                    "unhandled error",
                    exc_info=(type(exc), exc, exc.__traceback__),
                    extra={"event": "http.error", "fields": {"route": _route_of(scope)}},
                )
                if started:
                    raise
                failure = ApiProblem(500, "an internal error; the log has the details")
                await answer(Request(scope), failure)(scope, receive, send_observed)
            finally:
                seconds = time.perf_counter() - begun
                route = _route_of(scope)
                method = scope.get("method", "")
                self._observer(route, method, status).observe(seconds)
                log_event(_log, "http.request", method=method, route=route, status=status,
                          ms=round(seconds * 1000, 2))  # fmt: skip


router = APIRouter(tags=["system"])
ServicesDep = Annotated[Services, Depends(services)]

_EXPOSITION: Final = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/metrics",
    summary="Metrics in Prometheus' text format (admin)",
    response_class=Response,
    responses={
        200: {
            "description": "Every family (docs/operations.md), summed over the workers.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **error_responses(401, 403),
    },
)
def metrics(request: Request, svc: ServicesDep, identity: BearerIdentity) -> Response:
    """HTTP requests and latency, consent changes, deliveries, revocations, the audit log,
    jobs and the online meter. Admin tokens only: licensee names and entities are not
    public."""
    if identity.role != "admin":
        raise problem(403, "metrics need an admin token")
    meter: Any = getattr(request.app.state, "scraping_meter", None)
    body, _ = exposition(StateCollector(svc.store, meter))
    return Response(body, media_type=_EXPOSITION)
