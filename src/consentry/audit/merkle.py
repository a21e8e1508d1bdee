"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs, and their verification.

Pure functions over bytes (no I/O). Pinned to RFC 9162 (Certificate Transparency 2.0), §2.1:

- leaf hash: SHA-256(0x00 || entry); node hash: SHA-256(0x01 || left || right);
- MTH of n > 1 leaves splits at k, the largest power of two smaller than n;
- inclusion proofs are PATH(m, D[n]) (§2.1.3.1), consistency proofs PROOF(m, D[n]) (§2.1.4.1),
  both listed from the leaves up; verification follows §2.1.3.2 and §2.1.4.2 exactly.

The tree of n leaves equals the tree built bottom-up where a lone last node of a level is
carried up unchanged, so every *complete* subtree (2^h leaves starting at a multiple of 2^h)
has one fixed hash whatever the tree size. Those are what the log stores and what `MemoryTree`
holds per level; the hash of any other subtree of a tree of size n is folded from them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MemoryTree",
    "NodeSource",
    "consistency_ranges",
    "extend_frontier",
    "frontier_levels",
    "frontier_root",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "range_nodes",
    "reference_consistency",
    "reference_inclusion",
    "reference_root",
    "split_point",
    "subtree_count",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
"""Bytes in a SHA-256 digest: every leaf, node, root and proof element."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""MTH({}) = SHA-256() (RFC 9162 §2.1.1)."""

_LEAF: Final = b"\x00"
_NODE: Final = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return _sha256(_LEAF + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(_NODE + left + right).digest()


def split_point(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves does not split")
    return 1 << ((n - 1).bit_length() - 1)


def subtree_count(size: int, level: int) -> int:
    """How many complete subtrees of 2^level leaves a tree of `size` leaves has."""
    return size >> level


# --- reference definitions (RFC 9162 text, recursive; tests and the benchmark's peer) ----


def reference_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by the RFC's recursive definition."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = split_point(n)
    return node_hash(reference_root(leaf_hashes[:k]), reference_root(leaf_hashes[k:]))


def reference_inclusion(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) by the RFC's recursive definition."""
    n = len(leaf_hashes)
    if n <= 1:
        return []
    k = split_point(n)
    if m < k:
        return [*reference_inclusion(m, leaf_hashes[:k]), reference_root(leaf_hashes[k:])]
    return [*reference_inclusion(m - k, leaf_hashes[k:]), reference_root(leaf_hashes[:k])]


def reference_consistency(m: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) by the RFC's recursive definition (0 < m <= n; m == n gives [])."""

    def subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [reference_root(d)]
        k = split_point(n)
        if m <= k:
            return [*subproof(m, d[:k], b), reference_root(d[k:])]
        return [*subproof(m - k, d[k:], False), reference_root(d[:k])]

    return subproof(m, leaf_hashes, True)


# --- proofs as ranges of leaves, and range hashes from complete subtrees ----------------------


def inclusion_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges [lo, hi) whose MTHs make PATH(m, D[n]), from the leaf up.

    1. 0 <= m < n, else ValueError.
    2. Walk down from [0, n): split at k; the side not holding m is a proof element; the
       elements are listed in reverse walking order (leaf first), as the RFC lists them.
    """
    if not 0 <= m < n:
        raise ValueError(f"leaf {m} is not in a tree of size {n}")
    lo, hi = 0, n
    ranges: list[tuple[int, int]] = []
    while hi - lo > 1:
        k = split_point(hi - lo)
        if m - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def consistency_ranges(m: int, n: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make PROOF(m, D[n]) (RFC 9162 §2.1.4.1), leaf side first.

    1. 0 < m <= n, else ValueError; m == n gives no ranges.
    2. SUBPROOF(m, D[lo:hi], b) walked iteratively: when m reaches the size of the current
       subtree, it contributes itself unless it is the whole old tree (b true).
    """
    if not 0 < m <= n:
        raise ValueError(f"no consistency proof from size {m} to size {n}")
    lo, hi, b = 0, n, True
    ranges: list[tuple[int, int]] = []
    while True:
        size = hi - lo
        if m == size:
            if not b:
                ranges.append((lo, hi))
            break
        k = split_point(size)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo, m, b = lo + k, m - k, False
    ranges.reverse()
    return ranges


def range_nodes(lo: int, hi: int) -> list[tuple[int, int]]:
    """The complete subtrees (level, index) whose hashes fold into MTH(D[lo:hi]).

    `lo` must be a multiple of the largest power of two not above hi - lo (every range of a
    tree's structure is); they come left to right.
    """
    nodes: list[tuple[int, int]] = []
    while hi > lo:
        size = hi - lo
        if size & (size - 1) == 0:
            level = size.bit_length() - 1
            nodes.append((level, lo >> level))
            break
        k = split_point(size)
        level = k.bit_length() - 1
        nodes.append((level, lo >> level))
        lo += k
    return nodes


class NodeSource(Protocol):
    """Where complete-subtree hashes come from (memory, or the store)."""

    def complete(self, level: int, index: int) -> bytes: ...


def range_hash(source: NodeSource, lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi]) folded right to left from its complete subtrees (see `range_nodes`)."""
    nodes = range_nodes(lo, hi)
    result = source.complete(*nodes[-1])
    for level, index in reversed(nodes[:-1]):
        result = node_hash(source.complete(level, index), result)
    return result


# --- the frontier: the complete subtrees a tree of size n ends in (its compact range) -------


def frontier_levels(size: int) -> list[int]:
    """Levels of the frontier's subtrees, largest first: the set bits of `size`."""
    return [h for h in range(size.bit_length() - 1, -1, -1) if size >> h & 1]


def extend_frontier(
    size: int, frontier: Sequence[bytes], leaf_hashes: Iterable[bytes]
) -> tuple[int, list[bytes], list[bytes]]:
    """Append leaves to a tree known only by its frontier.

    1. `frontier` holds one hash per set bit of `size`, largest subtree first.
    2. Appending leaf hash x at size n merges x with the frontier's last hash once per
       trailing one bit of n; each merge completes a subtree one level up.
    3. Returns the new size, the new frontier, and per appended leaf the hashes of the
       subtrees it completed, concatenated from level 1 up (empty bytes when none).
    """
    nodes = list(frontier)
    completed: list[bytes] = []
    sha, node = _sha256, _NODE
    for leaf in leaf_hashes:
        h, n, done = leaf, size, b""
        while n & 1:
            h = sha(node + nodes.pop() + h).digest()
            done += h
            n >>= 1
        nodes.append(h)
        completed.append(done)
        size += 1
    return size, nodes, completed


def frontier_root(frontier: Sequence[bytes]) -> bytes:
    """MTH of the tree the frontier ends: its hashes folded right to left."""
    if not frontier:
        return EMPTY_ROOT
    result = frontier[-1]
    for h in reversed(frontier[:-1]):
        result = node_hash(h, result)
    return result


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ----------------------------------------


def _well_formed(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes | bytearray) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """True when `proof` shows the leaf hash `leaf` at `leaf_index` in the tree `root`.

    RFC 9162 §2.1.3.2; every hash must be 32 bytes.
    1. leaf_index >= tree_size fails; fn = leaf_index, sn = tree_size - 1, r = leaf.
    2. For each p: sn == 0 fails; if LSB(fn) or fn == sn: r = H(p, r) and, if LSB(fn) is
       unset, shift fn and sn right until LSB(fn) is set or fn is 0; else r = H(r, p).
       Then shift fn and sn right once.
    3. Success iff sn == 0 and r == root.
    """
    if not _well_formed(leaf, root, *proof) or not 0 <= leaf_index < tree_size:
        return False
    fn, sn, r = leaf_index, tree_size - 1, bytes(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes
) -> bool:
    """True when `proof` shows the tree `second_root` (size `second`) extends `first_root`.

    Edge cases first, as transparency-dev/merkle's RootFromConsistencyProof:
    1. Negative sizes or first > second fail.
    2. first == 0 fails: RFC 9162 §2.1.4 defines PROOF(m, D[n]) for 0 < m only; every tree
       extends the empty one, so such a "proof" would prove nothing.
    3. first == second needs an empty proof and equal roots (whatever their form: equal
       values prove themselves).
    Otherwise every hash must be 32 bytes and RFC 9162 §2.1.4.2 applies:
    4. An empty proof fails. If `first` is a power of two, prepend first_root.
    5. fn = first - 1, sn = second - 1; while LSB(fn): shift both right.
    6. fr = sr = proof[0]; for each later c: sn == 0 fails; if LSB(fn) or fn == sn:
       fr = H(c, fr), sr = H(c, sr), and if LSB(fn) is unset shift both right until LSB(fn)
       is set or fn is 0; else sr = H(sr, c). Then shift both right once.
    7. Success iff fr == first_root, sr == second_root and sn == 0.
    """
    if first <= 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if not proof or not _well_formed(first_root, second_root, *proof):
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, bytes(first_root))
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = bytes(path[0])
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


# --- an in-memory tree: every complete subtree, level by level -------------------------------


def _hash_pairs(level: bytes | bytearray, start: int, stop: int) -> bytes:
    """Parent hashes of the pairs start..stop-1 of a level (each pair 64 bytes)."""
    view = memoryview(level)
    sha, node = _sha256, _NODE
    return b"".join(
        [sha(node + view[i : i + 64]).digest() for i in range(start * 64, stop * 64, 64)]
    )


class MemoryTree:
    """Every complete subtree hash of a log, one byte string per level, kept in memory.

    Level h holds `size >> h` hashes of 32 bytes. Appending is incremental (only the new
    pairs are hashed); proofs read O(log n) hashes and fold at most one right-edge subtree.
    """

    def __init__(self) -> None:
        self.levels: list[bytearray] = [bytearray()]
        self.size = 0
        self._edges: dict[tuple[int, int], bytes] = {}

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: bytes | Sequence[bytes]) -> MemoryTree:
        tree = cls()
        tree.extend(leaf_hashes)
        return tree

    def extend(self, leaf_hashes: bytes | Sequence[bytes]) -> None:
        """Append leaf hashes (a sequence, or one concatenated byte string)."""
        data = leaf_hashes if isinstance(leaf_hashes, bytes) else b"".join(leaf_hashes)
        if len(data) % HASH_SIZE:
            raise ValueError("leaf hashes must be 32 bytes each")
        self.levels[0] += data
        self.size += len(data) // HASH_SIZE
        self._edges.clear()
        h = 0
        while (self.size >> (h + 1)) > 0:
            if len(self.levels) == h + 1:
                self.levels.append(bytearray())
            have = len(self.levels[h + 1]) // HASH_SIZE
            want = self.size >> (h + 1)
            if want > have:
                self.levels[h + 1] += _hash_pairs(self.levels[h], have, want)
            h += 1

    def complete(self, level: int, index: int) -> bytes:
        if index >= self.size >> level:
            raise IndexError(f"no complete subtree ({level}, {index}) in a tree of {self.size}")
        start = index * HASH_SIZE
        return bytes(self.levels[level][start : start + HASH_SIZE])

    def leaf_hashes(self) -> bytes:
        return bytes(self.levels[0])

    def _range(self, lo: int, hi: int) -> bytes:
        size = hi - lo
        if size & (size - 1) == 0:
            return self.complete(size.bit_length() - 1, lo // size)
        found = self._edges.get((lo, hi))
        if found is None:
            found = range_hash(self, lo, hi)
            if len(self._edges) > 4096:
                self._edges.clear()
            self._edges[(lo, hi)] = found
        return found

    def _check(self, n: int) -> int:
        if not 0 <= n <= self.size:
            raise ValueError(f"the tree has {self.size} leaves, not {n}")
        return n

    def root(self, size: int | None = None) -> bytes:
        n = self._check(self.size if size is None else size)
        return EMPTY_ROOT if n == 0 else self._range(0, n)

    def frontier(self, size: int | None = None) -> list[bytes]:
        n = self._check(self.size if size is None else size)
        out = []
        lo = 0
        for level in frontier_levels(n):
            out.append(self.complete(level, lo >> level))
            lo += 1 << level
        return out

    def inclusion_proof(self, leaf_index: int, size: int | None = None) -> list[bytes]:
        n = self._check(self.size if size is None else size)
        return [self._range(lo, hi) for lo, hi in inclusion_ranges(leaf_index, n)]

    def consistency_proof(self, first: int, second: int | None = None) -> list[bytes]:
        n = self._check(self.size if second is None else second)
        return [self._range(lo, hi) for lo, hi in consistency_ranges(first, n)]

    def inclusion_proofs(
        self, indices: npt.NDArray[np.int64], size: int | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
        """Inclusion proofs of many leaves at once, vectorised per level.

        1. At level h the node above leaf m is m >> h and its sibling s = (m >> h) ^ 1.
           s below `size >> h` is a complete subtree; s equal to it, with leaves left over
           below the level, is the right-edge subtree (folded once per tree size);
           otherwise the level adds nothing (the node is carried up).
        2. Returns proofs as a (len(indices), depth, 32) array, each row's elements first
           (leaf side first, as PATH lists them), and each row's element count.
        """
        n = self._check(self.size if size is None else size)
        m = np.asarray(indices, dtype=np.int64)
        if m.size and (m.min() < 0 or m.max() >= n):
            raise ValueError(f"leaf indices must be in [0, {n})")
        depth = max(0, (n - 1).bit_length())
        out = np.zeros((m.size, depth, HASH_SIZE), dtype=np.uint8)
        present = np.zeros((m.size, depth), dtype=bool)
        for h in range(depth):
            count = n >> h
            sibling = (m >> h) ^ 1
            level = np.frombuffer(self.levels[h], dtype=np.uint8).reshape(-1, HASH_SIZE)
            full = sibling < count
            if full.any():
                out[full, h] = level[sibling[full]]
            present[:, h] = full
            if n & ((1 << h) - 1):
                edge = sibling == count
                if edge.any():
                    lo = count << h
                    out[edge, h] = np.frombuffer(self._range(lo, n), dtype=np.uint8)
                    present[:, h] |= edge
        order = np.argsort(~present, axis=1, kind="stable")
        packed = np.take_along_axis(out, order[:, :, None], axis=1)
        return packed, present.sum(axis=1).astype(np.int64)
