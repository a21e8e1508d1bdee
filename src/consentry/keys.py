"""Secrets kept in the home's `keys/` directory, each created once on first use.

| file | what it is for |
|---|---|
| `keys/platform.secret` | HMAC-SHA256 key that signs API tokens (shared with the platform) |
| `keys/pseudonym.key`   | HMAC key for pseudonymous user references in audit events |
| `keys/session.secret`  | signs the settings pages' session cookies |
| `keys/master.key`      | master key that encrypts each licensee's pseudonymisation secret |
| `keys/signing.key`     | Ed25519 private key (PEM, PKCS#8) that signs delivery manifests |

Files are written atomically (temp file + link) with mode 0600. The master key may instead
come from the environment (`CONSENTRY_MASTER_KEY`, base64url of 32 bytes); then no
`master.key` file is created or read. Code that needs the master key must build its keyring
with `Keyring.for_settings`, which knows the environment's value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.errors import BadInput, ConsentryError, Problem
from consentry.settings import Settings

__all__ = [
    "MASTER_KEY_ENV",
    "MASTER_KEY_SIZE",
    "Keyring",
    "encode_master_key",
    "master_key_id",
    "parse_master_key",
]

MASTER_KEY_ENV: Final = "CONSENTRY_MASTER_KEY"
MASTER_KEY_SIZE: Final = 32
"""Bytes in the master key (AES-256-GCM)."""

_SIMPLE_KEYS: Final = ("platform.secret", "pseudonym.key", "session.secret")
_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _write_once(path: Path, content: bytes) -> None:
    """Write `content` to `path` (mode 0600) unless it already exists; atomic.

    Two processes racing here must end with one file: `link` fails if it already exists,
    and the loser then reads the winner's file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _load_or_create(path: Path, size: int = 32) -> bytes:
    """A hex-encoded random secret of `size` bytes, created on first use."""
    if not path.exists():
        _write_once(path, (secrets.token_hex(size) + "\n").encode("ascii"))
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


def encode_master_key(key: bytes) -> str:
    """The text form of a master key: base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def parse_master_key(text: str, *, source: str = MASTER_KEY_ENV) -> bytes:
    """The master key `text` encodes.

    1. Surrounding whitespace is ignored; `=` padding is optional.
    2. The text must be base64url (RFC 4648 §5: `A-Z a-z 0-9 - _`) of exactly 32 bytes,
       else BadInput naming `source` (the variable or the key file).
    """
    raw = text.strip().rstrip("=")
    problem = None
    if not raw or any(c not in _B64URL for c in raw):
        problem = "is not base64url text (A-Z, a-z, 0-9, '-', '_')"
    else:
        try:
            key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            problem = "is not valid base64url"
        else:
            if len(key) == MASTER_KEY_SIZE:
                return key
            problem = f"decodes to {len(key)} bytes; a master key is {MASTER_KEY_SIZE} bytes"
    raise BadInput(
        Problem(
            location=source,
            row=None,
            field=None,
            message=f'the master key {problem}; make one with `python -c "import base64,os;'
            "print(base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('='))\"`",
        )
    )


def master_key_id(key: bytes) -> str:
    """A public fingerprint of a master key: SHA-256 of its bytes, first 16 hex digits.

    Stored beside each sealed secret so a wrong master key is named as such instead of
    looking like corrupt data; the hash of 32 random bytes reveals nothing about them.
    """
    return hashlib.sha256(key).hexdigest()[:16]


def _signing_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class Keyring:
    """The home's secrets; each property creates its key file on first use."""

    directory: Path
    master_key_text: str | None = field(default=None, repr=False)
    """The environment's `CONSENTRY_MASTER_KEY`, if set; it wins over `keys/master.key`."""

    @classmethod
    def for_home(cls, home: Path) -> Keyring:
        """The keyring of `home`, ignoring any master key in the environment."""
        return cls(home / "keys")

    @classmethod
    def for_settings(cls, settings: Settings) -> Keyring:
        """The keyring of `settings.home`, with the master key from the settings if set."""
        return cls(settings.home / "keys", settings.master_key)

    @property
    def platform_secret(self) -> bytes:
        return _load_or_create(self.directory / "platform.secret")

    @property
    def pseudonym_key(self) -> bytes:
        return _load_or_create(self.directory / "pseudonym.key")

    @property
    def session_secret(self) -> bytes:
        return _load_or_create(self.directory / "session.secret")

    @property
    def master_key(self) -> bytes:
        """The 32-byte master key.

        1. `CONSENTRY_MASTER_KEY` (via `for_settings`), when set, is the key.
        2. Otherwise `keys/master.key` (base64url text), created on first use.
        3. Malformed text is BadInput naming where it came from.
        """
        if self.master_key_text is not None:
            return parse_master_key(self.master_key_text, source=MASTER_KEY_ENV)
        path = self.directory / "master.key"
        if not path.exists():
            _write_once(path, (encode_master_key(secrets.token_bytes(32)) + "\n").encode())
        return parse_master_key(path.read_text(encoding="ascii"), source=str(path))

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        """The installation's Ed25519 delivery-signing key (`keys/signing.key`)."""
        path = self.directory / "signing.key"
        if not path.exists():
            _write_once(path, _signing_key_pem())
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise ConsentryError(f"{path} is not a PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConsentryError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return key

    def ensure(self) -> list[str]:
        """Create every missing key; return the names of those created.

        1. The hex secrets and `signing.key` are created when missing.
        2. `master.key` is created only when no master key comes from the environment;
           an environment key is checked instead, so a malformed one fails at `init`.
        """
        created = []
        for name in _SIMPLE_KEYS:
            if not (self.directory / name).exists():
                _load_or_create(self.directory / name)
                created.append(name)
        if not (self.directory / "signing.key").exists():
            _ = self.signing_key  # creates the file
            created.append("signing.key")
        if self.master_key_text is not None:
            _ = self.master_key  # a malformed environment key fails here, at init
        elif not (self.directory / "master.key").exists():
            _ = self.master_key  # creates the file
            created.append("master.key")
        return created

    def pseudonym(self, user_id: str) -> str:
        """A stable pseudonymous reference for `user_id` (HMAC-SHA256, first 32 hex digits)."""
        digest = hmac.new(self.pseudonym_key, user_id.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:32]
