"""Secrets kept in the home's `keys/` directory, each created once on first use.

| file | what it is for |
|---|---|
| `keys/platform.secret` | HMAC-SHA256 key that signs API tokens (shared with the platform) |
| `keys/pseudonym.key`   | HMAC key for pseudonymous user references in audit events |
| `keys/session.secret`  | signs the settings pages' session cookies |

Files are written atomically (temp file + rename) with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Keyring"]


def _load_or_create(path: Path, size: int = 32) -> bytes:
    if path.exists():
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
    # Two processes racing here must end with one secret: link fails if it already exists.
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


@dataclass(frozen=True, slots=True)
class Keyring:
    """The home's secrets; each property creates its key file on first use."""

    directory: Path

    @classmethod
    def for_home(cls, home: Path) -> Keyring:
        return cls(home / "keys")

    @property
    def platform_secret(self) -> bytes:
        return _load_or_create(self.directory / "platform.secret")

    @property
    def pseudonym_key(self) -> bytes:
        return _load_or_create(self.directory / "pseudonym.key")

    @property
    def session_secret(self) -> bytes:
        return _load_or_create(self.directory / "session.secret")

    def ensure(self) -> list[str]:
        """Create every missing key; return the names of those created."""
        created = []
        for name in ("platform.secret", "pseudonym.key", "session.secret"):
            if not (self.directory / name).exists():
                _load_or_create(self.directory / name)
                created.append(name)
        return created

    def pseudonym(self, user_id: str) -> str:
        """A stable pseudonymous reference for `user_id` (HMAC-SHA256, first 32 hex digits)."""
        digest = hmac.new(self.pseudonym_key, user_id.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:32]
