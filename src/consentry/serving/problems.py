"""One error format for the whole API: RFC 9457 problem details (`application/problem+json`).

Every refusal of an API request is a problem object:

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "body:4: events[3].posts: Input should be less than or equal to 1000000000",
     "errors": [{"location": "body", "row": 4, "field": "events[3].posts",
                 "message": "Input should be less than or equal to 1000000000"}],
     "request_id": "…"}

1. `errors` lists what was wrong with the input, one item per problem, in the structure the
   CLI prints as `FILE:ROW: field: problem` (`consentry.errors.Problem`): `location` is the
   part of the request (`path`, `query`, `header`, `body`), `row` the 1-based position in the
   body's list when the problem is inside one item of it (else null), `field` the field at
   fault (`events[3].posts`, `at`, `Authorization`; null when no single field is) and
   `message` what is wrong. It is empty when the refusal is not about the input (403, 503).
2. `detail` is the same in words: the items as the CLI prints them, one per line, or the
   one message.
3. `type` is `about:blank` (the status says what kind of problem it is) and `title` the
   status's phrase; `request_id` is the request's id (the `X-Request-Id` header).
Pages are the exception: a browser asking for a page (HTML preferred by its `Accept`, on a
path outside the API or on a URL nothing matched, see `_wants_page`) gets an HTML error page
(the renderer the app installs with `install_problem_handlers`,
`consentry.web.errors.problem_page`), never a JSON body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from consentry.errors import BadInput
from consentry.observe.context import current_request_id

__all__ = [
    "PROBLEM_JSON",
    "ApiProblem",
    "ErrorPage",
    "ProblemDetails",
    "ProblemItem",
    "answer",
    "error_responses",
    "install_problem_handlers",
    "prefers_html",
    "problem",
    "problem_openapi",
    "unprocessable",
]

PROBLEM_JSON: Final = "application/problem+json"


class ProblemItem(BaseModel):
    """One problem with the input: where it is and what is wrong."""

    location: str = Field(description="The part of the request: path, query, header or body.")
    row: int | None = Field(
        description="1-based position in the body's list when the problem is inside one of "
        "its items; null otherwise."
    )
    field: str | None = Field(
        description="The field at fault (`events[3].posts`, `at`, `Authorization`); null "
        "when no single field is."
    )
    message: str = Field(description="What is wrong, and what to do instead.")


class ProblemDetails(BaseModel):
    """An RFC 9457 problem: every API refusal has this body (`application/problem+json`)."""

    type: str = Field("about:blank", description="Always `about:blank`: the status says it.")
    title: str = Field(description="The status's phrase (`Unprocessable Content`).")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What was wrong, in words (the errors, one per line).")
    errors: list[ProblemItem] = Field(
        description="The input's problems (`FILE:ROW: field: problem` as the CLI prints "
        "them); empty when the refusal is not about the input."
    )
    request_id: str | None = Field(None, description="The request's id (`X-Request-Id`).")


def _line(item: ProblemItem) -> str:
    where = item.location if item.row is None else f"{item.location}:{item.row}"
    return f"{where}: {item.field}: {item.message}" if item.field else f"{where}: {item.message}"


class ApiProblem(Exception):  # noqa: N818 - an answer, not a failure of ours
    """A refusal to answer with a problem body (raise it from a route or a dependency)."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        errors: Sequence[ProblemItem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.errors = list(errors)
        self.detail = detail or "\n".join(_line(e) for e in self.errors) or _phrase(status)
        self.headers = dict(headers or {})
        super().__init__(self.detail)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem(
    status: int,
    message: str,
    *,
    location: str | None = None,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> ApiProblem:
    """A refusal with one message; about the input (one `errors` item) when `location` is
    given."""
    errors = (
        [ProblemItem(location=location, row=None, field=field, message=message)]
        if location is not None
        else []
    )
    return ApiProblem(status, message if not errors else None, errors=errors, headers=headers)


def unprocessable(exc: BadInput, where: str) -> ApiProblem:
    """422 from a rule's BadInput: one item per problem, located in `where` (`query`, `body`,
    `header`), keeping the problem's row; its field, or else the input it names (a rule that
    checks one parameter names it as its input)."""
    return ApiProblem(
        422,
        errors=[
            ProblemItem(location=where, row=p.row, field=p.field or p.location, message=p.message)
            for p in exc.problems
        ],
    )


def _field(path: Sequence[str | int]) -> str | None:
    """`["events", 3, "posts"]` -> `events[3].posts`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def _validation_items(exc: RequestValidationError) -> list[ProblemItem]:
    """FastAPI's validation errors as problem items: `loc` (`["body", "events", 3, "posts"]`)
    gives the location, the field path and, for an item of a list, its 1-based row."""
    items = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        location = str(loc[0]) if loc else "request"
        path = loc[1:]
        row = next((p + 1 for p in path if isinstance(p, int)), None)
        items.append(
            ProblemItem(
                location=location,
                row=row,
                field=_field(path),
                message=str(error.get("msg", "invalid")),
            )
        )
    return items


def _problem_response(problem: ApiProblem) -> JSONResponse:
    body = ProblemDetails(
        title=_phrase(problem.status),
        status=problem.status,
        detail=problem.detail,
        errors=problem.errors,
        request_id=current_request_id(),
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=problem.status,
        headers=problem.headers or None,
        media_type=PROBLEM_JSON,
    )


_MACHINE_PATHS: Final = ("/v1/", "/healthz", "/metrics", "/openapi.json", "/.well-known/")
_HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
_JSON_TYPES: Final = frozenset({"application/json", PROBLEM_JSON})


def prefers_html(accept: str) -> bool:
    """Whether an `Accept` header asks for HTML before JSON (RFC 9110 section 12.5.1).

    1. Each media range's quality is its `q` parameter (1 when absent or unreadable).
    2. HTML's quality is the best of `text/html` and `application/xhtml+xml`, JSON's the best
       of `application/json` and `application/problem+json`; wildcards count for neither, so
       `*/*` (curl, httpx, most API clients) gets JSON.
    3. HTML is preferred when its quality is above 0 and above JSON's: a browser's
       `text/html,…,*/*;q=0.8` is; `application/json, text/html` is not.
    """
    html = json = 0.0
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 1.0
        kind = kind.lower()
        if kind in _HTML_TYPES:
            html = max(html, quality)
        elif kind in _JSON_TYPES:
            json = max(json, quality)
    return html > 0 and html > json


def _wants_page(request: Request) -> bool:
    """A browser asking for a page: HTML preferred (`prefers_html`), and either not an API
    path or a URL that no route or mount matched (an unknown `/v1/…` typed into a browser's
    address bar). A known API route answers a problem whatever the `Accept`."""
    if not prefers_html(request.headers.get("accept", "")):
        return False
    matched = "endpoint" in request.scope
    return not matched or not request.url.path.startswith(_MACHINE_PATHS)


ErrorPage = Callable[[Request, int, str, str], Response]
"""Renders an HTML error page: (request, status, title, detail)."""


def answer(request: Request, problem: ApiProblem) -> Response:
    """`problem` as a problem body, or as an error page for a browser asking for a page (when
    the app installed a page renderer)."""
    page: ErrorPage | None = getattr(request.app.state, "error_page", None)
    if page is not None and _wants_page(request):
        return page(request, problem.status, _phrase(problem.status), problem.detail)
    return _problem_response(problem)


def install_problem_handlers(app: FastAPI, error_page: ErrorPage | None = None) -> None:
    """Answer every refusal as a problem (or, for a browser asking for a page, as the
    `error_page` the interface layer passes in: this module sits below the pages and must
    not import them); errors nothing handled are answered by `consentry.api.observability`."""
    app.state.error_page = error_page

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        return answer(request, exc)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        return answer(request, ApiProblem(exc.status_code, str(exc.detail), headers=headers))

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return answer(request, ApiProblem(422, errors=_validation_items(exc)))

    app.add_exception_handler(ApiProblem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_invalid)


_MESSAGES: Final[dict[int, str]] = {
    400: "The request cannot be read as sent: a body that is not UTF-8 JSON, a cursor this "
    "server did not issue (the problem says which).",
    401: "No credential, or one that is malformed, forged, expired or disabled.",
    403: "The credential is valid but may not do this.",
    404: "No such resource, or not one this credential may see.",
    415: "The body is not `application/json`.",
    422: "The input breaks a rule: every problem is listed in `errors`.",
    503: "A store the answer depends on cannot be reached.",
}

_WWW_AUTHENTICATE: Final = {
    "WWW-Authenticate": {
        "description": '`Bearer` (RFC 6750), with `error="invalid_token"` for a bad one.',
        "schema": {"type": "string"},
    }
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route that may refuse with `codes` (each a `ProblemDetails`;
    422 is added to every operation with input by `problem_openapi`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ProblemDetails, "description": _MESSAGES[code]}
        if code == 401:
            out[code]["headers"] = _WWW_AUTHENTICATE
    return out


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """The generated schema with every refusal as `application/problem+json`.

    1. A 4xx/5xx response whose body is a `ProblemDetails` is declared under
       `application/problem+json` (FastAPI puts a model under `application/json`).
    2. The 422 FastAPI adds to every operation with input (its `HTTPValidationError`) is a
       `ProblemDetails` too; that schema and its `ValidationError` are dropped.
    A response that documents another body (the 503 of `/healthz`, a health report) keeps it.
    """
    refusals = {f"{_PREFIX}ProblemDetails", f"{_PREFIX}HTTPValidationError"}
    for methods in schema.get("paths", {}).values():
        for operation in methods.values():
            for code, response in operation.get("responses", {}).items():
                body = response.get("content", {}).get("application/json", {})
                if (
                    str(code)[:1] not in ("4", "5")
                    or body.get("schema", {}).get("$ref") not in refusals
                ):
                    continue
                response["content"] = {
                    PROBLEM_JSON: {"schema": {"$ref": f"{_PREFIX}ProblemDetails"}}
                }
                if str(code) == "422":
                    response["description"] = _MESSAGES[422]
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    return schema


_PREFIX: Final = "#/components/schemas/"
