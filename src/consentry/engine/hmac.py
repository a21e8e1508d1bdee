"""Keyed pseudonyms (HMAC-SHA256, hex) computed inside the engine.

Ibis has no binary concatenation, so the HMAC is written in each engine's own SQL: the
RFC 2104 construction over the engine's SHA-256, with the key's inner and outer pads as hex
literals. `hmac_hex` (Python's `hmac`) is the reference the tests hold both engines to.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["hmac_hex", "hmac_sql"]

_BLOCK = 64  # SHA-256 block size in bytes (RFC 2104: keys are padded to it)


def hmac_hex(key: bytes, message: str) -> str:
    """HMAC-SHA256 of the UTF-8 message under `key`, as 64 hex digits."""
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def _pads(key: bytes) -> tuple[str, str]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    inner = bytes(b ^ 0x36 for b in padded).hex()
    outer = bytes(b ^ 0x5C for b in padded).hex()
    return inner, outer


def hmac_sql(column: str, key: bytes, dialect: str) -> str:
    """A SQL expression for HMAC-SHA256(key, column) in hex, for `duckdb` or `pyspark`.

    1. inner = SHA-256((key xor ipad) || utf8(column))
    2. outer = SHA-256((key xor opad) || inner), in lower-case hex.
    `column` is a trusted identifier chosen by our code, never user input.
    """
    inner, outer = _pads(key)
    if dialect == "duckdb":
        return f"sha256(unhex('{outer}') || unhex(sha256(unhex('{inner}') || encode({column}))))"
    if dialect == "pyspark":
        return (
            f"sha2(concat(unhex('{outer}'), unhex(sha2(concat(unhex('{inner}'), "
            f"encode({column}, 'UTF-8')), 256))), 256)"
        )
    raise ValueError(f"no HMAC expression for engine {dialect!r}")
