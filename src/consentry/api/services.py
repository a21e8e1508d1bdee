"""The objects a running service shares between requests, and the FastAPI dependencies
that hand them out (identity from a bearer token, the GPC signal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from consentry.api.auth import Identity, InvalidTokenError, verify_token
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import PolicyFile, load_policy
from consentry.settings import Settings
from consentry.store import Store, open_store

__all__ = [
    "BearerIdentity",
    "Services",
    "bearer_identity",
    "services",
]


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

    @classmethod
    def build(cls, settings: Settings) -> Services:
        policy = load_policy(settings.policy_file)
        store = open_store(settings.resolved_database_url)
        keyring = Keyring.for_settings(settings)
        return cls(
            settings=settings,
            policy=policy,
            store=store,
            keyring=keyring,
            ledger=ConsentLedger(store, policy, keyring),
            platform_secret=keyring.platform_secret,
        )


def services(request: Request) -> Services:
    """The process's services (set on `app.state` by `create_app`)."""
    found: Services = request.app.state.services
    return found


def bearer_identity(request: Request, svc: Annotated[Services, Depends(services)]) -> Identity:
    """The caller named by `Authorization: Bearer <token>`; 401 when absent or invalid."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return verify_token(svc.platform_secret, token.strip())
    except InvalidTokenError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


BearerIdentity = Annotated[Identity, Depends(bearer_identity)]
