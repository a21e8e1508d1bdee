"""Who is calling: bearer tokens for the API, the same identity behind page sessions.

Tokens are JWTs (RFC 7519) signed with HMAC-SHA256 under the installation's shared secret
(`<home>/keys/platform.secret`, see `consentry.keys`). A platform that already knows
who its user is signs a token with that secret and passes it on; `consentry token user` and
`consentry token admin` issue tokens for local use.

Claims (all required unless marked):
1. `iss` — "consentry" for tokens we issue; a platform may put its own name (any string).
2. `sub` — the user id the token acts for (`role` user), or the admin's name (`role` admin).
3. `role` — `user` (acts only on `sub`) or `admin` (reads and checks anyone).
4. `iat`, `exp` — issued-at and expiry (seconds since the epoch); at most 366 days apart.
5. `aud` — "consentry-api".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import jwt

from consentry.errors import ConsentryError

__all__ = [
    "AUDIENCE",
    "Identity",
    "InvalidTokenError",
    "Role",
    "issue_token",
    "verify_token",
]

Role = Literal["user", "admin"]
AUDIENCE = "consentry-api"
_MAX_LIFETIME = timedelta(days=366)


class InvalidTokenError(ConsentryError):
    """The token is missing, malformed, expired, or not signed with our secret.

    `reason` says why in words a person can act on (`it has expired …`), never a JWT
    library's message; the error reads "That token is not valid: <reason>." and a caller
    that knows which kind of token was expected says so (`That admin token is not valid: …`).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"That token is not valid: {reason}.")


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller, once their token or session has been checked."""

    subject: str
    role: Role
    expires_at: datetime
    """When the token stops speaking for the caller (its `exp`); a session opened with the
    token ends then too."""

    def may_act_on(self, user_id: str) -> bool:
        """1. Admins may read and check anyone. 2. A user acts only on themselves."""
        return self.role == "admin" or self.subject == user_id


def issue_token(
    secret: bytes,
    subject: str,
    role: Role,
    *,
    lifetime: timedelta = timedelta(days=30),
    now: datetime | None = None,
    issuer: str = "consentry",
) -> str:
    """Sign a token for `subject` with `role`, valid for `lifetime` from `now`."""
    if not subject:
        raise ValueError("a token needs a subject")
    if lifetime <= timedelta(0) or lifetime > _MAX_LIFETIME:
        raise ValueError("token lifetime must be positive and at most 366 days")
    now = now or datetime.now(UTC)
    claims = {
        "iss": issuer,
        "sub": subject,
        "role": role,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + lifetime).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: bytes, token: str) -> Identity:
    """Check signature, audience, expiry and claims; return who the token speaks for.

    1. Only HS256 is accepted (no `none`, no algorithm confusion).
    2. `aud` must be "consentry-api"; `exp`, `iat`, `sub`, `role` must be present.
    3. `role` must be `user` or `admin`; lifetime may not exceed 366 days.
    4. Every refusal is an `InvalidTokenError` saying why in words (`_reason`).
    """
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidTokenError(_reason(exc, token)) from None
    role = claims.get("role")
    subject = claims.get("sub")
    if role not in ("user", "admin"):
        raise InvalidTokenError("its role must be user or admin")
    if not isinstance(subject, str) or not subject:
        raise InvalidTokenError("it names no one (its sub claim is empty)")
    if int(claims["exp"]) - int(claims["iat"]) > _MAX_LIFETIME.total_seconds():
        raise InvalidTokenError("it is valid for more than 366 days, longer than allowed")
    return Identity(
        subject=subject, role=role, expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC)
    )


def _reason(exc: jwt.PyJWTError, token: str) -> str:
    """Why PyJWT refused `token`, as a clause a person can act on (its own messages, such as
    "Not enough segments" or "Invalid header padding", say nothing to them).

    1. Not signed with this home's secret (checked before any claim): another installation's
       token, or an altered one.
    2. Not a JWT at all (wrong number of parts, not base64url, not JSON): a token copied in
       part, or something else pasted.
    3. Expired: when (its signature was checked first, so its `exp` can be shown).
    4. Dated in the future, meant for another audience, a required claim missing, another
       algorithm than HS256; anything else: its claims cannot be read.
    """
    issue = "issue a new one (`consentry token admin|user`)"
    # InvalidSignatureError is a DecodeError: it must be matched first.
    if isinstance(exc, jwt.InvalidSignatureError):
        return (
            "it was not signed with this installation's secret (it was issued by another "
            f"Consentry home, or altered); {issue}"
        )
    if isinstance(exc, jwt.DecodeError):
        return (
            "it is not a Consentry token (a token is three parts joined by dots, starting "
            "with eyJ); check that it was copied whole"
        )
    if isinstance(exc, jwt.ExpiredSignatureError):
        return f"it expired{_expiry(token)}; {issue}"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "it is dated in the future; check the clock of the machine that issued it"
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"it is not meant for the Consentry API (its aud claim is not {AUDIENCE})"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"it has no {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "it is not signed with HS256, the only algorithm accepted"
    return "its claims cannot be read (iat and exp must be numbers of seconds)"


def _expiry(token: str) -> str:
    """` at <instant>` from an expired token's `exp` (already verified), else nothing."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
        if not isinstance(exp, int | float):
            return ""
        at = datetime.fromtimestamp(int(exp), UTC)
    except (jwt.PyJWTError, ValueError, OverflowError, OSError):
        return ""
    return f" at {at:%Y-%m-%d %H:%M} UTC"
