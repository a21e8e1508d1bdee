"""The installation's signing keys, one lineage per payload kind, with their history.

A signature over one kind of payload must never be accepted as a signature over another, so
every kind has its own Ed25519 key, and the published key set (a JWKS, RFC 7517) says which
kinds each key signs or signed:

| kind | what its key signs | rotated by `consentry keys rotate` |
|---|---|---|
| `log` | audit checkpoints (C2SP signed notes), transparency reports | no: it names the log |
| `manifest` | `manifest.sig` over a delivery's `manifest.json` | yes |
| `feed` | the `Consentry-Signature` header over a revocation feed page's body | yes |
| `attestation` | DSSE envelopes of in-toto Statements (`manifest.intoto.json`) | yes |
| `http` | RFC 9421 HTTP message signatures of licensee API responses | yes |

The `log` key is `keys/signing.key`, the key the installation always had: the audit log's
origin line is derived from it and a C2SP verifier key names it, so replacing it starts a
new log rather than rotating this one. Before kinds had keys of their own that key signed
manifests and feed pages too; it stays published for those kinds (retired), so everything
it signed still verifies. The other kinds get fresh keys when the key set is first used.

The key set lives in `keys/signing-keys.json` (kid, file, created, payloads, current_for,
retired) beside one PEM file per key (`keys/signing-<kid>.key`, mode 0600). Changes are
made under an exclusive lock on `keys/.signing-keys.lock` and written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.errors import BadInput, ConsentryError, Problem
from consentry.keys import Keyring
from consentry.signing import Signer, key_id, public_jwk

__all__ = [
    "PAYLOAD_KINDS",
    "ROTATABLE_KINDS",
    "KeyEntry",
    "KeySet",
]

PAYLOAD_KINDS: Final = ("log", "manifest", "feed", "attestation", "http")
"""Every kind of payload the installation signs; each has its own key lineage."""
ROTATABLE_KINDS: Final = ("manifest", "feed", "attestation", "http")
"""The kinds `consentry keys rotate` replaces (the log's key names the log)."""
_LEGACY_PAYLOADS: Final = ("log", "manifest", "feed")
"""What `keys/signing.key` signed before kinds had keys of their own."""
_INDEX: Final = "signing-keys.json"
_LOCK: Final = ".signing-keys.lock"


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key of the set: which kinds it signed, which it still signs, when it retired."""

    kid: str
    file: str
    created: str
    payloads: tuple[str, ...]
    current_for: tuple[str, ...]
    retired: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "file": self.file,
            "created": self.created,
            "payloads": list(self.payloads),
            "current_for": list(self.current_for),
            "retired": self.retired,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyEntry:
        return cls(
            kid=str(data["kid"]),
            file=str(data["file"]),
            created=str(data["created"]),
            payloads=tuple(data["payloads"]),
            current_for=tuple(data["current_for"]),
            retired=data.get("retired"),
        )


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _write_private(path: Path, content: bytes) -> None:
    """A new key file, mode 0600, written beside and renamed (never half a key)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The signing keys of one home (see the module docstring)."""

    directory: Path

    @classmethod
    def for_home(cls, home: Path) -> KeySet:
        return cls(home / "keys")

    # --- reading ----------------------------------------------------------------------------

    def entries(self) -> list[KeyEntry]:
        """Every key, oldest first; the set is created on first use (see `_create`)."""
        index = self.directory / _INDEX
        if not index.exists():
            with self._locked():
                if not index.exists():
                    self._create()
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            return [KeyEntry.from_json(k) for k in data["keys"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConsentryError(f"{index} is not a signing key set: {exc}") from None

    def current(self, kind: str) -> KeyEntry:
        """The key that signs `kind` now."""
        if kind not in PAYLOAD_KINDS:
            raise ValueError(f"unknown payload kind {kind!r}")
        for entry in reversed(self.entries()):
            if kind in entry.current_for:
                return entry
        raise ConsentryError(f"{self.directory / _INDEX} has no current key for {kind!r}")

    def signer(self, kind: str) -> Signer:
        """A signer holding the current key of `kind`."""
        entry = self.current(kind)
        if entry.file == "signing.key":
            return Signer(Keyring(self.directory).signing_key)
        return Signer(self._load(entry))

    def _load(self, entry: KeyEntry) -> Ed25519PrivateKey:
        path = self.directory / entry.file
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConsentryError(f"{path} is not a readable PEM private key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey) or key_id(key.public_key()) != entry.kid:
            raise ConsentryError(f"{path} does not hold the Ed25519 key {entry.kid}")
        return key

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public key set with its history, as served at the well-known URL.

        Each JWK (RFC 8037 OKP, `alg` EdDSA) carries `consentry_payloads` (the kinds it
        signs or signed), `consentry_current_for` (the kinds it signs now; empty once it
        is retired), `consentry_created` and, for a retired key, `consentry_retired`. A
        verifier of kind K accepts only keys whose `consentry_payloads` include K.
        """
        keys: list[dict[str, Any]] = []
        for entry in self.entries():
            if entry.file == "signing.key":
                public = Keyring(self.directory).signing_key.public_key()
            else:
                public = self._load(entry).public_key()
            jwk: dict[str, Any] = {
                **public_jwk(public),
                "alg": "EdDSA",
                "key_ops": ["verify"],
                "consentry_payloads": list(entry.payloads),
                "consentry_current_for": list(entry.current_for),
                "consentry_created": entry.created,
            }
            if entry.retired is not None:
                jwk["consentry_retired"] = entry.retired
            keys.append(jwk)
        return {"keys": keys}

    # --- changing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _save(self, entries: Sequence[KeyEntry]) -> None:
        index = self.directory / _INDEX
        tmp = index.with_name(f".{index.name}.{secrets.token_hex(4)}.tmp")
        body = {"version": 1, "keys": [e.as_json() for e in entries]}
        tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, index)

    def _new_key(self, kind: str, now: str) -> KeyEntry:
        key = Ed25519PrivateKey.generate()
        kid = key_id(key.public_key())
        name = f"signing-{kid}.key"
        _write_private(self.directory / name, _pem(key))
        return KeyEntry(kid, name, now, (kind,), (kind,))

    def _create(self) -> None:
        """The first key set of this home (under the lock).

        1. `keys/signing.key` (created if missing) is the `log` key and, as it always was,
           a key of manifests and feed pages: current for `log` only.
        2. Every other kind gets a fresh key.
        """
        legacy = Keyring(self.directory).signing_key
        now = _now_text()
        entries = [
            KeyEntry(key_id(legacy.public_key()), "signing.key", now, _LEGACY_PAYLOADS, ("log",))
        ]
        entries += [self._new_key(kind, now) for kind in PAYLOAD_KINDS if kind != "log"]
        self._save(entries)

    def rotate(self, kinds: Iterable[str] = ROTATABLE_KINDS) -> list[KeyEntry]:
        """A new key for each kind in `kinds`; returns the new entries.

        1. Every kind must be rotatable (`log` is not: its key names the log), else BadInput.
        2. The key that signed the kind stops signing it; once it signs nothing it is
           retired (with the instant). It stays in the set, so its signatures still verify.
        3. The new key is current for the kind from now on.
        """
        wanted = list(dict.fromkeys(kinds))
        for kind in wanted:
            if kind not in ROTATABLE_KINDS:
                raise BadInput(
                    Problem(
                        "command line",
                        None,
                        "--kind",
                        f"{kind!r} cannot be rotated (choose from {', '.join(ROTATABLE_KINDS)})",
                    )
                )
        self.entries()  # creates the set on first use
        with self._locked():
            index = self.directory / _INDEX
            entries = [
                KeyEntry.from_json(k) for k in json.loads(index.read_text(encoding="utf-8"))["keys"]
            ]
            now = _now_text()
            created = [self._new_key(kind, now) for kind in wanted]
            updated = []
            for entry in entries:
                still = tuple(k for k in entry.current_for if k not in wanted)
                if still != entry.current_for:
                    entry = KeyEntry(
                        entry.kid,
                        entry.file,
                        entry.created,
                        entry.payloads,
                        still,
                        entry.retired if still else now,
                    )
                updated.append(entry)
            self._save([*updated, *created])
        return created
