"""The objects a running service shares between requests, and the FastAPI dependencies
that hand them out (identity from a bearer token, the GPC signal)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from consentry.audit.policy_history import published_versions
from consentry.engine.lake import Lake
from consentry.engine.post_authors import PostAuthors
from consentry.errors import ConsentryError
from consentry.keys import Keyring
from consentry.ledger.group import GroupCommitter
from consentry.ledger.service import ConsentLedger
from consentry.policy import PolicyFile, load_policy
from consentry.scraping.meter import Meter, meter_for
from consentry.serving.auth import Identity, InvalidTokenError, verify_token
from consentry.serving.problems import problem
from consentry.serving.signals_cache import SignalsCache
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.store import POOL_SIZE

__all__ = [
    "BearerIdentity",
    "PublishedVersions",
    "Services",
    "bearer_identity",
    "meter_of",
    "optional_bearer_identity",
    "run_read",
    "services",
    "verify_token_memo",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class PublishedVersions:
    """The policy versions published to the audit log, read once and again only when a
    version not seen yet is asked about (versions are published, never unpublished)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: frozenset[str] | None = None
        self._lock = threading.Lock()

    def names(self, wanted: str | None = None) -> frozenset[str]:
        """Every published version's name, re-read when `wanted` is not among them."""
        with self._lock:
            if self._known is None or (wanted is not None and wanted not in self._known):
                self._known = frozenset(published_versions(self.store))
            return self._known


@dataclass(frozen=True, slots=True)
class Services:
    """Built once per process by `create_app`."""

    settings: Settings
    policy: PolicyFile
    store: Store
    keyring: Keyring
    ledger: ConsentLedger
    platform_secret: bytes
    """The token-signing secret, read once: every API request checks a token with it."""
    committer: GroupCommitter
    """Consent changes of concurrent requests, committed together (`consentry.ledger.group`)."""
    published: PublishedVersions
    post_authors: PostAuthors
    """Post -> author from the lake's live `posts` snapshot (the public signals per post)."""
    signals_cache: SignalsCache
    """Authors' public signals, reused for at most CONSENTRY_SIGNALS_CACHE_MS."""

    @classmethod
    def build(cls, settings: Settings) -> Services:
        policy = load_policy(settings.policy_file)
        store = open_store(settings.resolved_database_url)
        keyring = Keyring.for_settings(settings)
        ledger = ConsentLedger(store, policy, keyring)
        return cls(
            settings=settings,
            policy=policy,
            store=store,
            keyring=keyring,
            ledger=ledger,
            platform_secret=keyring.platform_secret,
            committer=GroupCommitter(ledger),
            published=PublishedVersions(store),
            post_authors=PostAuthors(Lake.of(settings)),
            signals_cache=SignalsCache(),
        )


_VERIFIED_MAX = 10_000
"""Tokens whose successful check is remembered per process (the memo is then reset)."""
_verified: dict[tuple[bytes, str], tuple[Identity, float]] = {}


def verify_token_memo(secret: bytes, token: str) -> Identity:
    """`verify_token`, remembering each success until the token expires.

    1. A token that passed the check and whose `exp` is still ahead gives the same identity
       without checking the signature again (the HMAC check was the largest single cost of
       an API request). The memo is keyed by secret and the whole token string.
    2. Anything else — a new token, a failure, an expired token — goes through
       `verify_token`, so every refusal is exactly its refusal. Only a token's expiry can
       turn a past success into a failure (its other claims cannot change).
    """
    key = (secret, token)
    hit = _verified.get(key)
    if hit is not None and time.time() < hit[1]:
        return hit[0]
    identity = verify_token(secret, token)
    if len(_verified) >= _VERIFIED_MAX:
        _verified.clear()
    _verified[key] = (identity, identity.expires_at.timestamp())
    return identity


async def run_read(
    svc: Services, read: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
) -> _T:
    """Run `read` (a read of the store, never a write) for an `async def` endpoint.

    1. SQLite store: inline, on the event loop. The database is a local file and WAL readers
       never wait for writers, so a read takes a fraction of a millisecond — less than
       handing it to the thread pool and back costs (that hand-off was ~40% of the CPU of
       `GET /v1/users/{id}/consent`, see docs/benchmarks.md).
    2. Any other store (PostgreSQL: network round trips): in a thread (`_readers`), so the
       event loop never waits on the network.
    """
    if svc.store.backend_name == "sqlite":
        return read(*args, **kwargs)
    context = contextvars.copy_context()
    call = functools.partial(context.run, read, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_readers(), call)


_READERS: list[ThreadPoolExecutor] = []
_READERS_LOCK = threading.Lock()


def _readers() -> ThreadPoolExecutor:
    """The process's threads for `run_read`, started on first use: as many as the store's
    connection pool holds, so reads never open connections beyond it. A plain executor
    rather than Starlette's thread pool (AnyIO's capacity limiter and cancel scopes cost
    more CPU than a point read's statement, on every request); the read runs in a copy of
    the request's context (its request id), as there."""
    if not _READERS:
        with _READERS_LOCK:
            if not _READERS:
                _READERS.append(
                    ThreadPoolExecutor(max_workers=POOL_SIZE, thread_name_prefix="consentry-read")
                )
    return _READERS[0]


# The dependencies below are `async def` although they never await: they do no I/O, and
# FastAPI runs a plain `def` dependency in the thread pool, a hand-off that cost more than
# the work itself on every request.


async def services(request: Request) -> Services:
    """The process's services (set on `app.state` by `create_app`)."""
    found: Services = request.app.state.services
    return found


_TOKEN = HTTPBearer(
    scheme_name="token",
    bearerFormat="JWT",
    description="A user or admin token (`consentry token user|admin`, docs/consent.md).",
    auto_error=False,
)


async def bearer_identity(
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_TOKEN)],
) -> Identity:
    """The caller named by `Authorization: Bearer <token>`; 401 when absent or invalid."""
    found = await optional_bearer_identity(svc, credentials)
    if found is None:
        raise problem(
            401,
            "a bearer token is required (Authorization: Bearer <token>)",
            location="header",
            field="Authorization",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


async def optional_bearer_identity(
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_TOKEN)],
) -> Identity | None:
    """The caller named by a bearer token, None without one; 401 for a token that does
    not pass `verify_token` (a bad token is never read as no token)."""
    token = credentials.credentials.strip() if credentials else ""
    if not token:
        return None
    try:
        return verify_token_memo(svc.platform_secret, token)
    except InvalidTokenError as exc:
        raise problem(
            401,
            str(exc),
            location="header",
            field="Authorization",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


BearerIdentity = Annotated[Identity, Depends(bearer_identity)]


_METER_LOCK = threading.Lock()


def meter_of(request: Request, svc: Services) -> Meter:
    """The process's meter, built on first use (thread-safe); 503 when the home's policy or
    entities cannot make one (the message says why)."""
    found = getattr(request.app.state, "scraping_meter", None)
    if isinstance(found, Meter):
        return found
    with _METER_LOCK:
        found = getattr(request.app.state, "scraping_meter", None)
        if not isinstance(found, Meter):
            try:
                found = meter_for(svc.settings, backend=svc.settings.meter_backend)
            except ConsentryError as exc:
                raise problem(503, f"the meter cannot start: {exc}") from None
            request.app.state.scraping_meter = found
    return found
