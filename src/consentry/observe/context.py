"""The request id: one per HTTP request (or CLI invocation), carried into logs, job logs and
audit events.

1. The HTTP layer takes the caller's `X-Request-Id` when it is a sane token (1 to 128
   characters of letters, digits and `-_.:`), else makes one, and returns it in the
   response's `X-Request-Id` header.
2. It lives in a context variable: code running for the request (in the event loop or in the
   thread pool, which copies the context) sees it without passing it around.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

__all__ = [
    "REQUEST_ID_HEADER",
    "current_request_id",
    "new_request_id",
    "request_id_from",
    "using_request_id",
]

REQUEST_ID_HEADER: Final = "X-Request-Id"
_SANE: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID: ContextVar[str | None] = ContextVar("consentry_request_id", default=None)


_prefix: tuple[int, str] = (0, "")
_counter = itertools.count(1)


def new_request_id() -> str:
    """A fresh id, unique across processes: 8 random bytes drawn once per process, then a
    counter (drawing random bytes per request cost more than the rest of the id)."""
    global _prefix
    pid = os.getpid()
    if _prefix[0] != pid:
        _prefix = (pid, secrets.token_hex(8))
    return f"{_prefix[1]}-{next(_counter):x}"


def request_id_from(header: str | None) -> str:
    """The caller's id when it is a sane token, else a fresh one (an id ends up in logs and
    audit events: nothing else may ride in on it)."""
    if header and _SANE.fullmatch(header):
        return header
    return new_request_id()


def current_request_id() -> str | None:
    """The id of the request (or CLI invocation) this code runs for; None outside one."""
    return _REQUEST_ID.get()


@contextmanager
def using_request_id(request_id: str | None) -> Iterator[str | None]:
    """Run the block as part of request `request_id`."""
    token = _REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        _REQUEST_ID.reset(token)
