"""Browser sessions, kept server-side (table `web_sessions`) so that signing out ends them.

The session cookie (`consentry_session`, signed with `keys/session.secret`) carries the form
token (CSRF), a one-time notice, and one random token per role signed in. Who is signed in is
never taken from the cookie alone:

1. Signing in (`open_session`) makes a random 256-bit token for the cookie; the store keeps
   only its SHA-256, with the subject, the role and the expiry. A session lasts
   SESSION_LIFETIME; an admin session ends when the admin token it was opened with expires,
   if that comes first.
2. A request is signed in as a role (`signed_in`) when its cookie's token for that role names
   a row of that role that has not ended and has not expired.
3. Signing out (`end_sessions`) ends this browser's rows and clears the cookie: a copy of the
   old cookie signs no one in.
4. Rows that have expired are deleted whenever a session opens.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Final

import sqlalchemy as sa
from fastapi import Request
from sqlalchemy.orm import Session

from consentry.serving.auth import Role
from consentry.store import Store
from consentry.store.models import WebSessionRow

__all__ = ["SESSION_LIFETIME", "end_sessions", "open_session", "signed_in"]

SESSION_LIFETIME: Final = timedelta(days=14)
"""The longest a session lasts (the cookie's max-age too)."""

_COOKIE_KEYS: Final[dict[Role, str]] = {"user": "user_session", "admin": "admin_session"}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _store(request: Request) -> Store:
    store: Store = request.app.state.services.store
    return store


def open_session(
    request: Request, subject: str, role: Role, *, expires_at: datetime | None = None
) -> bool:
    """Sign this browser in as `subject` in `role` (step 1); ends the browser's previous
    session of that role. False, and nothing opened, when `expires_at` has passed."""
    now = datetime.now(UTC)
    until = min(now + SESSION_LIFETIME, expires_at or now + SESSION_LIFETIME)
    if until <= now:
        return False
    token = secrets.token_urlsafe(32)
    with _store(request).session() as session:
        session.execute(sa.delete(WebSessionRow).where(WebSessionRow.expires_at <= now))
        _end(session, [request.session.get(_COOKIE_KEYS[role])], now)
        session.add(
            WebSessionRow(
                id=_digest(token), subject=subject, role=role, created_at=now, expires_at=until
            )
        )
    request.session[_COOKIE_KEYS[role]] = token
    return True


def signed_in(request: Request, role: Role) -> str | None:
    """The subject this request's session speaks for in `role`, or None (step 2)."""
    token = request.session.get(_COOKIE_KEYS[role])
    if not isinstance(token, str):
        return None
    with _store(request).session() as session:
        row = session.get(WebSessionRow, _digest(token))
        if (
            row is None
            or row.role != role
            or row.ended_at is not None
            or row.expires_at <= datetime.now(UTC)
        ):
            return None
        return row.subject


def end_sessions(request: Request) -> None:
    """Sign this browser out of every role (step 3) and clear its cookie."""
    tokens = [request.session.get(key) for key in _COOKIE_KEYS.values()]
    with _store(request).session() as session:
        _end(session, tokens, datetime.now(UTC))
    request.session.clear()


def _end(session: Session, tokens: list[object], now: datetime) -> None:
    ids = [_digest(t) for t in tokens if isinstance(t, str)]
    if ids:
        session.execute(
            sa.update(WebSessionRow)
            .where(WebSessionRow.id.in_(ids), WebSessionRow.ended_at.is_(None))
            .values(ended_at=now)
        )
