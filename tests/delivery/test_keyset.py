"""The key set: one key per payload kind, rotation keeps history, the JWKS says who signs what."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from consentry.delivery.keyset import PAYLOAD_KINDS, ROTATABLE_KINDS, KeySet
from consentry.errors import BadInput
from consentry.signing import Signer, verify


def test_first_use_gives_every_kind_its_own_key_and_keeps_the_log_key(tmp_path: Path) -> None:
    legacy = Signer.for_home(tmp_path)
    keyset = KeySet.for_home(tmp_path)
    kids = {kind: keyset.current(kind).kid for kind in PAYLOAD_KINDS}
    assert kids["log"] == legacy.kid
    assert len(set(kids.values())) == len(PAYLOAD_KINDS)
    for kind in PAYLOAD_KINDS:
        assert keyset.signer(kind).kid == kids[kind]
    (old,) = [e for e in keyset.entries() if e.kid == legacy.kid]
    assert set(old.payloads) == {"log", "manifest", "feed"}
    assert old.current_for == ("log",)
    for entry in keyset.entries():
        if entry.file != "signing.key":
            assert os.stat(tmp_path / "keys" / entry.file).st_mode & 0o777 == 0o600


def test_a_signature_of_one_kind_never_verifies_as_another(tmp_path: Path) -> None:
    keyset = KeySet.for_home(tmp_path)
    document = keyset.jwks()
    data = b'{"a manifest": 1}'
    signature = keyset.signer("feed").sign(data)
    assert verify(document, data, signature, payload="feed")
    assert not verify(document, data, signature, payload="manifest")
    http_signature = keyset.signer("http").sign(data)
    for kind in ("manifest", "feed", "attestation", "log"):
        assert not verify(document, data, http_signature, payload=kind)


def test_rotation_retires_the_old_key_and_keeps_it_published(tmp_path: Path) -> None:
    keyset = KeySet.for_home(tmp_path)
    before = keyset.signer("manifest")
    signature = before.sign(b"old manifest")
    created = keyset.rotate(["manifest"])
    assert [e.payloads for e in created] == [("manifest",)]
    after = keyset.signer("manifest")
    assert after.kid == created[0].kid != before.kid
    document = keyset.jwks()
    by_kid = {k["kid"]: k for k in document["keys"]}
    assert by_kid[before.kid]["consentry_current_for"] == []
    assert "consentry_retired" in by_kid[before.kid]
    assert by_kid[after.kid]["consentry_current_for"] == ["manifest"]
    assert verify(document, b"old manifest", signature, kid=before.kid, payload="manifest")
    # The log key is never rotated: the log's origin names it.
    assert keyset.current("log").kid == Signer.for_home(tmp_path).kid
    with pytest.raises(BadInput, match="cannot be rotated"):
        keyset.rotate(["log"])
    assert {e.kid for e in keyset.rotate()} == {keyset.current(k).kid for k in ROTATABLE_KINDS}
    index = json.loads((tmp_path / "keys" / "signing-keys.json").read_text())
    assert len(index["keys"]) == len(PAYLOAD_KINDS) + 1 + len(ROTATABLE_KINDS)
