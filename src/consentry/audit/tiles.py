"""The audit log as C2SP tlog-tiles: tile paths, hash tiles and entry bundles (pure).

Pinned to C2SP tlog-tiles (tile height 8, full tiles of 256 hashes):
- `/tile/<L>/<N>[.p/<W>]`: the hashes of the complete subtrees at tree level 8·L with
  indices 256·N … 256·N + W - 1, concatenated (32 bytes each); W = 256 for a full tile,
  1 ≤ W < 256 for a partial one (`.p/<W>`).
- `/tile/entries/<N>[.p/<W>]`: entries 256·N … 256·N + W - 1 as an entry bundle, each
  a big-endian uint16 length followed by that many bytes (the leaf entry of
  `consentry.audit.log`, whose leaf hash is SHA-256(0x00 || entry)).
- `<N>` is written in 3-digit path elements, every element but the last prefixed `x`:
  1234067 is `x001/x234/067`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from consentry.audit.merkle import HASH_SIZE, MemoryTree

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "TilePath",
    "entry_bundle",
    "format_index",
    "hash_tile",
    "parse_tile_path",
]

TILE_HEIGHT: Final = 8
TILE_WIDTH: Final = 1 << TILE_HEIGHT
_ELEMENT: Final = re.compile(r"x\d{3}")
_LAST: Final = re.compile(r"\d{3}")


def format_index(n: int) -> str:
    """`n` as tlog-tiles path elements (`x001/x234/067`)."""
    digits = f"{n:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i : i + 3] for i in range(0, len(digits), 3)]
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


class TilePath:
    """A parsed tile path: level (None for entries), index and width."""

    __slots__ = ("index", "level", "width")

    def __init__(self, level: int | None, index: int, width: int) -> None:
        self.level, self.index, self.width = level, index, width


def parse_tile_path(level: str, rest: str) -> TilePath | None:
    """The tile `/tile/<level>/<rest>` names, or None when the path is not one.

    1. `level` is `entries` or a decimal level of at most 2 digits (no leading zeros).
    2. `rest` is the index elements, optionally followed by `.p/<W>` with 1 ≤ W ≤ 255
       (decimal, no leading zeros).
    """
    if level == "entries":
        tile_level: int | None = None
    elif re.fullmatch(r"0|[1-9]\d?", level):
        tile_level = int(level)
    else:
        return None
    width = TILE_WIDTH
    if ".p/" in rest:
        rest, _, w = rest.partition(".p/")
        if not re.fullmatch(r"[1-9]\d{0,2}", w) or int(w) >= TILE_WIDTH:
            return None
        width = int(w)
    parts = rest.split("/")
    if not parts or not _LAST.fullmatch(parts[-1]):
        return None
    if not all(_ELEMENT.fullmatch(p) for p in parts[:-1]):
        return None
    index = int("".join(p.lstrip("x") for p in parts))
    if format_index(index) != rest:
        return None  # a non-canonical spelling (e.g. a leading x000)
    return TilePath(tile_level, index, width)


def hash_tile(tree: MemoryTree, size: int, level: int, index: int, width: int) -> bytes | None:
    """The hash tile (level, index, width) of the tree of `size` leaves, or None when the
    tree of that size does not have it (more hashes than complete subtrees)."""
    height = level * TILE_HEIGHT
    if height >= len(tree.levels):
        return None
    first = index * TILE_WIDTH
    if first + width > size >> height:
        return None
    row = tree.levels[height]
    return bytes(row[first * HASH_SIZE : (first + width) * HASH_SIZE])


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries as a tlog-tiles bundle: each a big-endian uint16 length, then its bytes."""
    out = bytearray()
    for entry in entries:
        if len(entry) > 0xFFFF:
            raise ValueError(f"an entry of {len(entry)} bytes does not fit a tile bundle")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)
