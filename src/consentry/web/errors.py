"""Refusals and failures as pages a person can read: what the app installs as its error page.

`consentry.serving.problems` answers every refusal as an RFC 9457 problem, except to a
browser asking for a page (`prefers_html`); it then calls `problem_page`, which draws
`error.html` with the same status:

1. The heading is what happened in plain words (`Page not found`, `Something went wrong on
   our side`), not the status's phrase.
2. The message is the problem's detail as a sentence; a detail that only repeats the phrase
   (`Not Found`, as the router says it) is replaced by what to do (`There is no page at
   /x …`). A 500 never shows the error itself (the log has it, under the request id), only
   the request id to quote.
3. The page always links to the home page and shows the request id as a reference.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from fastapi import Request
from fastapi.responses import Response

from consentry import __version__
from consentry.observe.context import current_request_id
from consentry.web import templates

__all__ = ["problem_page"]

_HEADINGS: Final[dict[int, str]] = {
    400: "That request could not be read",
    401: "You are not signed in",
    403: "That is not allowed",
    404: "Page not found",
    405: "That cannot be done here",
    406: "That format is not available",
    413: "That is too large",
    415: "That format is not accepted",
    422: "That request could not be used",
    429: "Too many requests",
    500: "Something went wrong on our side",
    503: "This service is unavailable for a moment",
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _sentence(text: str) -> str:
    """First letter up, full stop at the end; the rest as written."""
    text = text.strip()
    if not text:
        return text
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _message(request: Request, status: int, detail: str) -> str:
    """The page's sentence for `detail` (module doc, step 2)."""
    if status >= 500 and status != 503:
        return (
            "The error was logged; nothing you did caused it. Try again in a moment. If it "
            "keeps happening, tell the site's operators the reference below."
        )
    if detail.strip() and detail.strip() != _phrase(status):
        return " ".join(_sentence(line) for line in detail.splitlines() if line.strip())
    if status == 404:
        return (
            f"There is no page at {request.url.path}. Check the address, or start again "
            "from the home page."
        )
    if status == 405:
        return f"The address {request.url.path} does not take a {request.method} request."
    return f"The request was refused ({status} {_phrase(status)})."


def problem_page(request: Request, status: int, title: str, detail: str) -> Response:
    """`error.html` for a refusal or failure (module doc); `title` is the status's phrase,
    used as the heading only for a status without a plainer one."""
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "version": __version__,
            "title": _HEADINGS.get(status, title),
            "message": _message(request, status, detail),
            "link_href": "/",
            "link_text": "Go to the home page",
            "reference": current_request_id(),
            "status": status,
        },
        status_code=status,
    )
