"""A tlog-tiles client written from the C2SP specs here, against a real `consentry serve`.

It knows nothing of Consentry but the origin's verifier key: it verifies the checkpoint note
(C2SP signed-note, Ed25519), fetches hash tiles and entry bundles over HTTP, recomputes the
leaf hash of an entry, builds the inclusion proof from tile hashes (RFC 9162 PATH) and
checks it against the signed root. One changed tile byte makes the proof fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.audit import entry_json
from consentry.audit.log import append_events
from consentry.audit.tiles import format_index, parse_tile_path
from consentry.cli.admin import init_home
from consentry.settings import Settings
from consentry.store import open_store
from tests.services import serving

LEAVES = 600  # two full level-0 tiles and a partial one; a partial level-1 tile of width 2


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("tiles") / "home"
    settings = Settings(home=home)
    init_home(settings)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        payload = [
            ("consent.anchored", entry_json({"events": i, "events_digest": f"{i:064x}"}))
            for i in range(LEAVES)
        ]
        append_events(session, payload)
    with serving(home) as url:
        yield url


# --- the client: C2SP signed-note, tlog-checkpoint, tlog-tiles, RFC 9162 ---------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def verify_note(note: str, vkey: str) -> tuple[int, bytes]:
    """(size, root) of a checkpoint note signed by the vkey's key; AssertionError otherwise.
    Signature lines of other keys are ignored."""
    name, key_hash_hex, blob = vkey.strip().split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 1
    key = Ed25519PublicKey.from_public_bytes(raw[1:])
    assert _sha(name.encode() + b"\n\x01" + raw[1:])[:4].hex() == key_hash_hex
    body, _, signatures = note.partition("\n\n")
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            continue
        line_name, _, sig_blob = line[2:].rpartition(" ")
        try:
            sig = base64.b64decode(sig_blob, validate=True)
        except binascii.Error:
            continue  # not a signature of any key: ignored, as signed-note requires
        if line_name == name and sig[:4].hex() == key_hash_hex:
            key.verify(sig[4:], (body + "\n").encode())
            origin, size, root = body.split("\n")
            assert origin == name
            return int(size), base64.b64decode(root)
    raise AssertionError("no signature line of the verifier key")


class TileClient:
    def __init__(self, url: str, size: int, get: Callable[[str], bytes] | None = None) -> None:
        self.url, self.size = url, size
        self.get = get or (lambda path: httpx.get(url + path, timeout=10).content)
        self.fetched: dict[str, bytes] = {}

    def _tile(self, level: int | str, index: int, full_width: int) -> bytes:
        path = f"/tile/{level}/{format_index(index)}"
        if full_width < 256:
            path += f".p/{full_width}"
        if path not in self.fetched:
            self.fetched[path] = self.get(path)
        return self.fetched[path]

    def node(self, height: int, k: int) -> bytes:
        """Hash of the complete subtree at tree height `height`, index k (from tiles)."""
        level, rest = divmod(height, 8)
        if rest:
            return _sha(b"\x01" + self.node(height - 1, 2 * k) + self.node(height - 1, 2 * k + 1))
        count = self.size >> height  # complete subtrees at this height
        width = min(256, count - (k // 256) * 256)
        data = self._tile(level, k // 256, width)
        i = k % 256
        return data[32 * i : 32 * i + 32]

    def mth(self, lo: int, hi: int) -> bytes:
        n = hi - lo
        if n & (n - 1) == 0:
            return self.node(n.bit_length() - 1, lo // n)
        k = 1 << ((n - 1).bit_length() - 1)
        return _sha(b"\x01" + self.mth(lo, lo + k) + self.mth(lo + k, hi))

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = 1 << ((n - 1).bit_length() - 1)
        if m - lo < k:
            return [*self.path(m, lo, lo + k), self.mth(lo + k, hi)]
        return [*self.path(m, lo + k, hi), self.mth(lo, lo + k)]

    def entry(self, m: int) -> bytes:
        width = min(256, self.size - (m // 256) * 256)
        bundle = self._tile("entries", m // 256, width)
        offset = 0
        for _ in range(m % 256):
            offset += 2 + int.from_bytes(bundle[offset : offset + 2], "big")
        length = int.from_bytes(bundle[offset : offset + 2], "big")
        return bundle[offset + 2 : offset + 2 + length]


def root_from_path(m: int, n: int, leaf: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root an inclusion path gives."""
    fn, sn, r = m, n - 1, leaf
    for p in path:
        if fn & 1 or fn == sn:
            r = _sha(b"\x01" + p + r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _sha(b"\x01" + r + p)
        fn, sn = fn >> 1, sn >> 1
    return r


# --- the tests -------------------------------------------------------------------------------


def test_the_client_proves_inclusion_from_tiles_against_the_signed_checkpoint(served: str) -> None:
    vkey = httpx.get(served + "/.well-known/consentry-audit-vkey").text
    size, root = verify_note(httpx.get(served + "/checkpoint").text, vkey)
    assert size >= LEAVES  # `init` logs its own events first
    client = TileClient(served, size)
    assert client.mth(0, size) == root
    for m in (0, 255, 256, 511, 599):
        entry = client.entry(m)
        assert entry.startswith(b"consentry-audit-v1\n")
        leaf = _sha(b"\x00" + entry)
        assert root_from_path(m, size, leaf, client.path(m, 0, size)) == root


def test_one_changed_tile_byte_fails_the_proof(served: str) -> None:
    vkey = httpx.get(served + "/.well-known/consentry-audit-vkey").text
    size, root = verify_note(httpx.get(served + "/checkpoint").text, vkey)

    def tampered(path: str) -> bytes:
        data = bytearray(httpx.get(served + path, timeout=10).content)
        if path == "/tile/0/000":
            data[7] ^= 0x01
        return bytes(data)

    client = TileClient(served, size, tampered)
    leaf = _sha(b"\x00" + client.entry(3))
    assert root_from_path(3, size, leaf, client.path(3, 0, size)) != root


def test_witness_cosignatures_and_unknown_lines_are_ignored(served: str) -> None:
    vkey = httpx.get(served + "/.well-known/consentry-audit-vkey").text
    note = httpx.get(served + "/checkpoint").text
    witness = (
        "\u2014 witness.example/w1 " + base64.b64encode(b"\x01\x02\x03\x04" + bytes(72)).decode()
    )
    garbage = "\u2014 someone not-base64!"
    cosigned = note.replace("\n\n", f"\n\n{witness}\n{garbage}\n", 1)
    assert verify_note(cosigned, vkey) == verify_note(note, vkey)
    from consentry.audit.checkpoint import parse_signed_checkpoint, parse_verifier_key

    name, key_hash, key = parse_verifier_key(vkey)
    parsed = parse_signed_checkpoint(cosigned, key_hash=key_hash)
    assert parsed.key_name == name
    assert parsed.verify(key)


def test_paths_that_are_not_tiles_are_404(served: str) -> None:
    for path in (
        "/tile/0/1",
        "/tile/0/x000/001",
        "/tile/0/000.p/256",
        "/tile/0/009",
        "/tile/99/000",
    ):
        assert httpx.get(served + path).status_code == 404, path
    assert parse_tile_path("0", "x001/x234/067") is not None
    assert format_index(1234067) == "x001/x234/067"
