"""Signed checkpoints of the audit log, in the C2SP checkpoint / signed-note text format.

A checkpoint is three lines — origin, tree size (decimal), base64 root hash — each ending in
a newline; the signed note appends a blank line and one signature line
`— <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>`. The key name is
the origin; the key hash is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key),
as C2SP signed-note specifies for Ed25519 keys. The signature covers the checkpoint text.

A note may carry more signature lines (witness cosignatures, C2SP tlog-cosignature, or any
other key's): a verifier picks the line by key name and key hash and ignores every other line,
so an unknown or malformed line never makes a valid note fail. The log's verifier key is
published in the C2SP `vkey` form `<name>+<key hash hex>+<base64(0x01 || public key)>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.audit.merkle import HASH_SIZE
from consentry.errors import BadInput, Problem
from consentry.signing import Signer

__all__ = [
    "Checkpoint",
    "SignedCheckpoint",
    "log_origin",
    "note_key_hash",
    "parse_signed_checkpoint",
    "parse_verifier_key",
    "sign_checkpoint",
    "signature_lines",
    "verifier_key",
]

_DASH: Final = "\u2014"
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw


def log_origin(signer: Signer) -> str:
    """The log's origin line: `consentry/audit/<signing key id>` (unique per installation)."""
    return f"consentry/audit/{signer.kid}"


def note_key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """First 4 bytes of SHA-256(name || "\\n" || 0x01 || raw public key) (C2SP signed note)."""
    raw = public_key.public_bytes(_RAW, _RAW_PUBLIC)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def verifier_key(name: str, public_key: Ed25519PublicKey) -> str:
    """The C2SP note verifier key: `<name>+<key hash, 8 hex>+<base64(0x01 || key)>`."""
    raw = public_key.public_bytes(_RAW, _RAW_PUBLIC)
    key_hash = note_key_hash(name, public_key).hex()
    blob = base64.b64encode(b"\x01" + raw).decode("ascii")
    return f"{name}+{key_hash}+{blob}"


def parse_verifier_key(text: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """(name, key hash, public key) of a C2SP Ed25519 verifier key; BadInput otherwise.

    The key hash must be the one the name and key give (a mislabelled key is refused)."""
    name, sep1, rest = text.strip().partition("+")
    hash_hex, sep2, blob = rest.partition("+")
    try:
        raw = base64.b64decode(blob, validate=True)
        key_hash = bytes.fromhex(hash_hex)
    except (binascii.Error, ValueError):
        raise _bad("verifier key", "not `name+hash+base64`") from None
    if not (sep1 and sep2 and name) or len(key_hash) != 4 or len(raw) != 33 or raw[0] != 1:
        raise _bad("verifier key", "not an Ed25519 C2SP verifier key (`name+hash+base64`)")
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    if note_key_hash(name, key) != key_hash:
        raise _bad("verifier key", "the key hash does not match the name and key")
    return name, key_hash, key


def signature_lines(text: str) -> list[tuple[str, bytes]]:
    """Every well-formed signature line of a note: (key name, key hash || signature).

    Lines after the first blank line that start with an em dash and a space; a line whose
    blob is not base64 of more than 4 bytes is skipped (it cannot be anybody's signature)."""
    _, _, rest = text.partition("\n\n")
    found = []
    for line in rest.split("\n"):
        if not line.startswith(_DASH + " "):
            continue
        name, _, blob = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            continue
        if name and len(raw) > 4:
            found.append((name, raw))
    return found


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint commits to: the log's identity, its size and its root hash."""

    origin: str
    size: int
    root_hash: bytes

    def text(self) -> str:
        """The checkpoint body (the signed bytes, UTF-8)."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return f"{self.origin}\n{self.size}\n{root}\n"


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint with its signature line, as published."""

    checkpoint: Checkpoint
    key_name: str
    key_hash: bytes
    signature: bytes

    def note(self) -> str:
        blob = base64.b64encode(self.key_hash + self.signature).decode("ascii")
        return f"{self.checkpoint.text()}\n{_DASH} {self.key_name} {blob}\n"

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """True when the key hash names `public_key` and the signature checks under it."""
        if self.key_hash != note_key_hash(self.key_name, public_key):
            return False
        try:
            public_key.verify(self.signature, self.checkpoint.text().encode())
        except InvalidSignature:
            return False
        return True


def sign_checkpoint(signer: Signer, size: int, root_hash: bytes) -> SignedCheckpoint:
    """Sign (origin, size, root) with the installation's Ed25519 key (deterministic)."""
    checkpoint = Checkpoint(log_origin(signer), size, root_hash)
    name = checkpoint.origin
    return SignedCheckpoint(
        checkpoint=checkpoint,
        key_name=name,
        key_hash=note_key_hash(name, signer.public_key),
        signature=signer.sign(checkpoint.text().encode()),
    )


def _bad(location: str, message: str) -> BadInput:
    return BadInput(Problem(location=location, row=None, field="checkpoint", message=message))


def parse_signed_checkpoint(
    text: str, *, location: str = "checkpoint", key_hash: bytes | None = None
) -> SignedCheckpoint:
    """Read a signed checkpoint note; BadInput naming what is malformed.

    1. The body is the text up to the first blank line: origin, decimal size, base64 root of
       32 bytes (further extension lines are refused: this log writes none).
    2. The log's signature is the line whose key name is the origin (and, when `key_hash` is
       given, whose first 4 bytes are that hash), with 64 signature bytes. Every other line
       (witness cosignatures, other keys, lines of no known form) is ignored.
    """
    body, sep, _ = text.partition("\n\n")
    if not sep:
        raise _bad(location, "no blank line between the checkpoint and its signature")
    lines = body.split("\n")
    if len(lines) != 3:
        raise _bad(location, f"expected 3 checkpoint lines, found {len(lines)}")
    origin, size_text, root_text = lines
    if not size_text.isdigit() or (size_text != "0" and size_text.startswith("0")):
        raise _bad(location, f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise _bad(location, "the root hash is not base64") from None
    if len(root) != HASH_SIZE:
        raise _bad(location, f"the root hash has {len(root)} bytes, not {HASH_SIZE}")
    for name, raw in signature_lines(text):
        if name != origin or (key_hash is not None and raw[:4] != key_hash):
            continue
        if len(raw) != 4 + 64:
            raise _bad(location, "the log's signature line is not `— NAME BASE64(keyhash||sig)`")
        return SignedCheckpoint(Checkpoint(origin, int(size_text), root), name, raw[:4], raw[4:])
    raise _bad(location, "the checkpoint carries no signature line of its origin's key")
