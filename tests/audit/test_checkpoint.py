"""Signed checkpoints as C2SP signed notes: the exact bytes, the verifier key, and every
malformed note or key refused with the check it failed (docs/formats.md)."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    log_origin,
    note_key_hash,
    parse_signed_checkpoint,
    parse_verifier_key,
    sign_checkpoint,
    signature_lines,
    verifier_key,
)
from consentry.errors import BadInput
from consentry.signing import Signer

ROOT = bytes(range(32))
ONE, TWO, ZERO = b"\x01", b"\x02", b"\x00"
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
DASH = "\u2014"


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _note(body: str, *lines: str) -> str:
    return body + "\n" + "".join(line + "\n" for line in lines)


def test_the_note_is_three_lines_a_blank_line_and_the_signature_line(signer: Signer) -> None:
    signed = sign_checkpoint(signer, 5, ROOT)
    origin = f"consentry/audit/{signer.kid}"
    assert log_origin(signer) == origin
    raw = signer.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_hash = hashlib.sha256(origin.encode() + b"\n\x01" + raw).digest()[:4]
    body = f"{origin}\n5\n{base64.b64encode(ROOT).decode()}\n"
    assert signed.checkpoint.text() == body
    assert signed.key_name == origin
    assert signed.key_hash == key_hash == note_key_hash(origin, signer.public_key)
    signer.public_key.verify(signed.signature, body.encode())
    blob = base64.b64encode(key_hash + signed.signature).decode()
    assert signed.note() == f"{body}\n{DASH} {origin} {blob}\n"
    assert parse_signed_checkpoint(signed.note()) == signed
    assert parse_signed_checkpoint(signed.note(), key_hash=key_hash) == signed


def test_a_signature_verifies_only_under_the_key_its_hash_names(signer: Signer) -> None:
    signed = sign_checkpoint(signer, 7, ROOT)
    other = KEY
    assert signed.verify(signer.public_key)
    assert not signed.verify(other.public_key())
    # The right key hash but a signature over other bytes.
    moved = SignedCheckpoint(
        Checkpoint(signed.checkpoint.origin, 8, ROOT),
        signed.key_name,
        signed.key_hash,
        signed.signature,
    )
    assert not moved.verify(signer.public_key)
    # Another key's signature labelled with this key's hash.
    relabelled = SignedCheckpoint(
        signed.checkpoint,
        signed.key_name,
        signed.key_hash,
        other.sign(signed.checkpoint.text().encode()),
    )
    assert not relabelled.verify(signer.public_key)


def test_the_verifier_key_is_name_hash_and_base64_key_and_reads_back() -> None:
    key = KEY
    name = "consentry/audit/k1"
    text = verifier_key(name, key.public_key())
    key_hash = note_key_hash(name, key.public_key())
    assert text == f"{name}+{key_hash.hex()}+{base64.b64encode(ONE + _raw(key)).decode()}"
    parsed_name, parsed_hash, parsed_key = parse_verifier_key(f"  {text}\n")
    assert (parsed_name, parsed_hash) == (name, key_hash)
    assert _raw_public(parsed_key) == _raw(key)


def _raw_public(key: object) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    assert isinstance(key, Ed25519PublicKey)
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


NOT_VKEY = "checkpoint: not `name+hash+base64`"


def _vkey_cases() -> list[tuple[str, str]]:
    key = KEY
    raw = _raw(key)
    name = "log"
    good_hash = note_key_hash(name, key.public_key()).hex()
    b64 = base64.b64encode
    return [
        (f"{name}_{good_hash}_{b64(ONE + raw).decode().replace('+', '-')}", "base64"),
        (f"{name}+{good_hash}", "not an Ed25519"),
        (f"+{good_hash}+{b64(ONE + raw).decode()}", "not an Ed25519"),
        (
            f"{name}+zz{good_hash[2:]}+{b64(ONE + raw).decode()}",
            NOT_VKEY,
        ),
        (f"{name}+{good_hash}+not base64!", NOT_VKEY),
        (f"{name}+{good_hash}00+{b64(ONE + raw).decode()}", "not an Ed25519"),
        (f"{name}+{good_hash[:6]}+{b64(ONE + raw).decode()}", "not an Ed25519"),
        (f"{name}+{good_hash}+{b64(raw).decode()}", "not an Ed25519"),
        (f"{name}+{good_hash}+{b64(ONE + raw + ZERO).decode()}", "not an Ed25519"),
        (f"{name}+{good_hash}+{b64(TWO + raw).decode()}", "not an Ed25519"),
        (f"other+{good_hash}+{b64(ONE + raw).decode()}", "does not match"),
    ]


@pytest.mark.parametrize(("text", "message"), _vkey_cases(), ids=range(len(_vkey_cases())))
def test_a_malformed_or_mislabelled_verifier_key_is_refused(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=re.escape(message)):
        parse_verifier_key(text)


def test_signature_lines_are_the_well_formed_lines_after_the_blank_line() -> None:
    good = base64.b64encode(b"\x01\x02\x03\x04\x05").decode()
    four = base64.b64encode(b"\x01\x02\x03\x04").decode()
    text = _note(
        f"{DASH} early {good}\nb\nc\n",
        f"{DASH} witness/one {good}",
        f"{DASH} short {four}",
        f"{DASH} bad !!notbase64",
        f"{DASH}  {good}",
        f"- dash {good}",
        f"{DASH}nospace {good}",
        f"{DASH} name with spaces {good}",
    )
    assert signature_lines(text) == [
        ("witness/one", b"\x01\x02\x03\x04\x05"),
        ("name with spaces", b"\x01\x02\x03\x04\x05"),
    ]
    assert signature_lines("no blank line\n") == []


def _body(size: str = "5", root: bytes = ROOT, origin: str = "log") -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def _line(name: str, key_hash: bytes = b"\x00\x01\x02\x03", sig: bytes = b"\x05" * 64) -> str:
    return f"{DASH} {name} {base64.b64encode(key_hash + sig).decode()}"


def _with_stray(line: str) -> str:
    """The signature line with a character outside base64 inside its blob."""
    head, _, blob = line.rpartition(" ")
    return f"{head} {blob[:10]}*{blob[10:]}"


def test_the_origins_line_is_picked_among_cosignatures() -> None:
    text = _note(
        _body(),
        _line("witness", b"\x09" * 4),
        _line("log", b"\x08" * 4, b"\x06" * 64),
        _line("log", b"\x00\x01\x02\x03"),
    )
    first = parse_signed_checkpoint(text)
    assert first == SignedCheckpoint(Checkpoint("log", 5, ROOT), "log", b"\x08" * 4, b"\x06" * 64)
    by_hash = parse_signed_checkpoint(text, key_hash=b"\x00\x01\x02\x03")
    assert (by_hash.key_hash, by_hash.signature) == (b"\x00\x01\x02\x03", b"\x05" * 64)
    zero = parse_signed_checkpoint(_note(_body("0"), _line("log")))
    assert zero.checkpoint.size == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_body() + _line("log") + "\n", "no blank line"),
        (_note("log\n5\n", _line("log")), "expected 3 checkpoint lines, found 2"),
        (_note(_body() + "extension\n", _line("log")), "expected 3 checkpoint lines, found 4"),
        (_note(_body("05"), _line("log")), "is not a decimal number"),
        (_note(_body("-5"), _line("log")), "is not a decimal number"),
        (_note(_body("5a"), _line("log")), "is not a decimal number"),
        (_note(_body("5 "), _line("log")), "is not a decimal number"),
        (_note(_body(" 5"), _line("log")), "is not a decimal number"),
        (_note("log\n5\n!!!!\n", _line("log")), "root hash is not base64"),
        (_note(_body(root=ROOT[:31]), _line("log")), "has 31 bytes, not 32"),
        (_note(_body(root=ROOT + b"\x00"), _line("log")), "has 33 bytes, not 32"),
        (_note(_body(), _line("log", sig=b"\x05" * 63)), "signature line is not"),
        (_note(_body(), _line("log", sig=b"\x05" * 65)), "signature line is not"),
        (_note(_body(), _line("witness")), "no signature line of its origin"),
        (_note(_body()), "no signature line of its origin"),
        # base64 is read strictly: a stray character is no signature, not one skipped over
        (_note(_body(), _with_stray(_line("log"))), "no signature line of its origin"),
    ],
)
def test_a_malformed_note_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        parse_signed_checkpoint(text)


def test_lines_after_a_further_blank_line_are_still_signature_lines() -> None:
    """The body ends at the first blank line; later blank lines are lines of no known form."""
    text = _note(_body(), _line("log", b"\x08" * 4), "", _line("witness", b"\x09" * 4))
    assert [name for name, _ in signature_lines(text)] == ["log", "witness"]
    assert parse_signed_checkpoint(text).key_hash == b"\x08" * 4


def test_a_malformed_note_is_named_checkpoint_unless_told_otherwise() -> None:
    with pytest.raises(BadInput) as default:
        parse_signed_checkpoint("no blank line\n")
    assert [p.location for p in default.value.problems] == ["checkpoint"]
    with pytest.raises(BadInput) as named:
        parse_signed_checkpoint("no blank line\n", location="tiles/checkpoint")
    assert [p.location for p in named.value.problems] == ["tiles/checkpoint"]


def test_a_key_hash_selects_only_its_line() -> None:
    text = _note(_body(), _line("log", b"\x08" * 4))
    with pytest.raises(BadInput, match="no signature line of its origin"):
        parse_signed_checkpoint(text, key_hash=b"\x09" * 4)


def test_a_verifier_key_with_a_stray_character_in_its_base64_is_refused() -> None:
    text = verifier_key("log", KEY.public_key())
    name, key_hash, blob = text.split("+", 2)
    for stray in (f"{blob[:10]}!{blob[10:]}", f"{blob[:10]} {blob[10:]}", f"{blob}\n="):
        with pytest.raises(BadInput, match=re.escape(NOT_VKEY)):
            parse_verifier_key(f"{name}+{key_hash}+{stray}")
