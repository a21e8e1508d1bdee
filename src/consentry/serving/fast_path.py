"""The shape both ASGI fast paths share (`consentry.api.consent_fast.ConsentFastPath`,
`consentry.api.public_signals.PublicSignalsFastPath`): answer a few requests without the
app's routing, dependencies and inner middleware, and pass every other one on unchanged."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from consentry.serving.services import Services

__all__ = ["FastPath"]

_Wanted = TypeVar("_Wanted")


class FastPath(ABC, Generic[_Wanted]):
    """An ASGI middleware that answers some requests itself and leaves the rest to `app`.

    1. A request that is not HTTP, or whose path does not start with `prefix`, goes on to
       the app untouched (the one string test most requests meet).
    2. `wanted(scope)` reads what a request the fast path answers asks for, with checks that
       need no service; None sends it on to the app.
    3. `answer(scope, receive, send, wanted)` answers it, and may still hand it to the app
       (a refusal the routes phrase, a failure nothing was sent for yet).
    """

    prefix: ClassVar[str]

    def __init__(self, app: ASGIApp, *, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        found = self.wanted(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        await self.answer(scope, receive, send, found)

    @abstractmethod
    def wanted(self, scope: Scope) -> _Wanted | None:
        """What the request asks for, if the fast path answers it."""

    @abstractmethod
    async def answer(self, scope: Scope, receive: Receive, send: Send, wanted: _Wanted) -> None:
        """Answer the request (or pass it on to `self.app`)."""
