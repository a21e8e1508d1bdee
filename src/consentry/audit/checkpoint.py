"""Signed checkpoints of the audit log, in the C2SP checkpoint / signed-note text format.

A checkpoint is three lines — origin, tree size (decimal), base64 root hash — each ending in
a newline; the signed note appends a blank line and one signature line
`— <key name> <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>`. The key name is
the origin; the key hash is the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key),
as C2SP signed-note specifies for Ed25519 keys. The signature covers the checkpoint text.
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
from consentry.delivery.signing import Signer
from consentry.errors import BadInput, Problem

__all__ = [
    "Checkpoint",
    "SignedCheckpoint",
    "log_origin",
    "note_key_hash",
    "parse_signed_checkpoint",
    "sign_checkpoint",
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


def parse_signed_checkpoint(text: str, *, location: str = "checkpoint") -> SignedCheckpoint:
    """Read a signed checkpoint note; BadInput naming what is malformed.

    1. The body is the text up to the first blank line: origin, decimal size, base64 root of
       32 bytes (further extension lines are refused: this log writes none).
    2. After the blank line, the first line starting with an em dash is the signature:
       key name, then base64 of 4 key-hash bytes and 64 signature bytes.
    """
    body, sep, rest = text.partition("\n\n")
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
    for line in rest.split("\n"):
        if not line.startswith(_DASH + " "):
            continue
        name, _, blob = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise _bad(location, "the signature is not base64") from None
        if len(raw) != 4 + 64 or not name:
            raise _bad(location, "the signature line is not `— NAME BASE64(keyhash||sig)`")
        return SignedCheckpoint(Checkpoint(origin, int(size_text), root), name, raw[:4], raw[4:])
    raise _bad(location, "the checkpoint carries no signature line")
