"""RFC 9162 hashing and proofs, tested like transparency-dev/merkle: known-good vectors (its
proof/verify_test.go, from RFC 6962's test tree), corrupt probes that must all fail, and
property tests against the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    extend_frontier,
    frontier_root,
    leaf_hash,
    node_hash,
    reference_consistency,
    reference_inclusion,
    reference_root,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _h(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(x) for x in hexes]


# (leaf index, tree size, proof) from transparency-dev/merkle proof/verify_test.go.
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _h(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _h(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _h(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
    (
        6,
        7,
        _h(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
TREE = MemoryTree.from_leaf_hashes([leaf_hash(x) for x in LEAVES])


def _flip(proof: list[bytes], i: int, bit: int) -> list[bytes]:
    wrong = list(proof)
    wrong[i] = bytes([wrong[i][0] ^ bit]) + wrong[i][1:]
    return wrong


def inclusion_probes(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, tuple[int, int, bytes, list[bytes], bytes]]]:
    probes = [
        ("index - 1", (index - 1, size, leaf, proof, root)),
        ("index + 1", (index + 1, size, leaf, proof, root)),
        ("index ^ 2", (index ^ 2, size, leaf, proof, root)),
        ("size * 2", (index, size * 2, leaf, proof, root)),
        ("size / 2", (index, size // 2, leaf, proof, root)),
        ("wrong leaf", (index, size, b"WrongLeaf", proof, root)),
        ("empty root", (index, size, leaf, proof, EMPTY_ROOT)),
        ("random root", (index, size, leaf, proof, SOME_HASH)),
        ("trailing garbage", (index, size, leaf, [*proof, b""], root)),
        ("trailing root", (index, size, leaf, [*proof, root], root)),
        ("preceding garbage", (index, size, leaf, [b"", *proof], root)),
        ("preceding root", (index, size, leaf, [root, *proof], root)),
    ]
    probes += [
        (f"proof[{i}] bit {b}", (index, size, leaf, _flip(proof, i, 1 << b), root))
        for i in range(len(proof))
        for b in (0, 3, 7)
    ]
    if proof:
        probes.append(("truncated", (index, size, leaf, proof[:-1], root)))
    if len(proof) > 1:
        probes.append(("inserted", (index, size, leaf, [proof[0], SOME_HASH, *proof[1:]], root)))
    return probes


def consistency_probes(
    m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes
) -> list[tuple[str, tuple[int, int, list[bytes], bytes, bytes]]]:
    probes = [
        ("size1 - 1", (m - 1, n, proof, r1, r2)),
        ("size1 + 1", (m + 1, n, proof, r1, r2)),
        ("size1 ^ 2", (m ^ 2, n, proof, r1, r2)),
        ("size2 * 2", (m, n * 2, proof, r1, r2)),
        ("size2 / 2", (m, n // 2, proof, r1, r2)),
        ("wrong root1", (m, n, proof, b"WrongRoot", r2)),
        ("wrong root2", (m, n, proof, r1, b"WrongRoot")),
        ("swapped roots", (m, n, proof, r2, r1)),
        ("empty proof", (m, n, [], r1, r2)),
        ("trailing garbage", (m, n, [*proof, b""], r1, r2)),
        ("trailing root1", (m, n, [*proof, r1], r1, r2)),
        ("trailing root2", (m, n, [*proof, r2], r1, r2)),
        ("preceding garbage", (m, n, [b"", *proof], r1, r2)),
        ("preceding root1", (m, n, [r1, *proof], r1, r2)),
        ("preceding root2", (m, n, [r2, *proof], r1, r2)),
        ("preceding proof[0]", (m, n, [proof[0], *proof], r1, r2)),
        ("truncated", (m, n, proof[:-1], r1, r2)),
    ]
    probes += [
        (f"proof[{i}] bit {b}", (m, n, _flip(proof, i, 1 << b), r1, r2))
        for i in range(len(proof))
        for b in (0, 4, 7)
    ]
    return probes


def test_empty_tree_and_leaf_hashes() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MemoryTree().root() == EMPTY_ROOT == reference_root([])
    assert leaf_hash(b"") == ROOTS[0]
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


@pytest.mark.parametrize("size", range(1, 9))
def test_known_roots(size: int) -> None:
    assert TREE.root(size) == ROOTS[size - 1]
    assert reference_root([leaf_hash(x) for x in LEAVES[:size]]) == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_known_inclusion_proofs_and_their_corruptions(
    index: int, size: int, proof: list[bytes]
) -> None:
    leaf, root = leaf_hash(LEAVES[index]), ROOTS[size - 1]
    assert TREE.inclusion_proof(index, size) == proof
    assert verify_inclusion(index, size, leaf, proof, root)
    accepted = [
        name
        for name, args in inclusion_probes(index, size, proof, root, leaf)
        if verify_inclusion(*args)
    ]
    assert accepted == []


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_known_consistency_proofs_and_their_corruptions(
    first: int, second: int, proof: list[bytes]
) -> None:
    r1, r2 = ROOTS[first - 1], ROOTS[second - 1]
    assert TREE.consistency_proof(first, second) == proof
    assert verify_consistency(first, second, proof, r1, r2)
    if proof:
        accepted = [
            name
            for name, args in consistency_probes(first, second, proof, r1, r2)
            if verify_consistency(*args)
        ]
        assert accepted == []


def test_inclusion_edge_cases_fail() -> None:
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 1)):
        assert not verify_inclusion(index, size, SOME_HASH, [], EMPTY_ROOT)
    one = leaf_hash(b"data")
    assert verify_inclusion(0, 1, one, [], one)
    assert not verify_inclusion(0, 1, one, [], b"")
    assert not verify_inclusion(0, 1, b"", [], one)


def test_consistency_edge_cases() -> None:
    r1, r2 = b"1" * 32, b"2" * 32
    assert verify_consistency(0, 0, [], r1, r1)
    assert verify_consistency(0, 1, [], r1, r2)
    assert verify_consistency(1, 1, [], r2, r2)
    assert not verify_consistency(0, 0, [], r1, r2)
    assert not verify_consistency(1, 1, [], r1, r2)
    assert not verify_consistency(1, 0, [], r1, r2)
    assert not verify_consistency(2, 1, [], r1, r2)
    assert not verify_consistency(1, 2, [], r1, r2)
    assert not verify_consistency(0, 1, [EMPTY_ROOT], r1, r1)
    assert not verify_consistency(1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_consistency_between_random_sizes(data: st.DataObject) -> None:
    second = data.draw(st.integers(1, 300), label="second")
    first = data.draw(st.integers(1, second), label="first")
    leaves = _leaves(second)
    tree = MemoryTree.from_leaf_hashes(leaves)
    proof = tree.consistency_proof(first, second)
    assert proof == reference_consistency(first, leaves)
    r1, r2 = tree.root(first), tree.root(second)
    assert r1 == reference_root(leaves[:first])
    assert r2 == reference_root(leaves)
    assert verify_consistency(first, second, proof, r1, r2)
    if proof:
        accepted = [
            name
            for name, args in consistency_probes(first, second, proof, r1, r2)
            if verify_consistency(*args)
        ]
        assert accepted == []


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_inclusion_at_random_sizes(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 300), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    leaves = _leaves(size)
    tree = MemoryTree.from_leaf_hashes(leaves)
    proof = tree.inclusion_proof(index)
    assert proof == reference_inclusion(index, leaves)
    root = tree.root()
    assert verify_inclusion(index, size, leaves[index], proof, root)
    accepted = [
        name
        for name, args in inclusion_probes(index, size, proof, root, leaves[index])
        if verify_inclusion(*args)
    ]
    assert accepted == []


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6))
def test_frontier_and_incremental_tree_agree_with_reference(batches: list[int]) -> None:
    size, tree = 0, MemoryTree()
    frontier: list[bytes] = []
    leaves: list[bytes] = []
    for count in batches:
        batch = _leaves(len(leaves) + count)[len(leaves) :]
        size, frontier, completed = extend_frontier(size, frontier, batch)
        tree.extend(batch)
        leaves += batch
        assert frontier_root(frontier) == reference_root(leaves) == tree.root()
        assert frontier == tree.frontier()
        for offset, blob in enumerate(completed):
            n = len(leaves) - len(batch) + offset + 1
            levels = (n & -n).bit_length() - 1
            assert blob == b"".join(tree.complete(h, (n >> h) - 1) for h in range(1, levels + 1))


def test_batched_inclusion_proofs_match_single_ones() -> None:
    leaves = _leaves(77)
    tree = MemoryTree.from_leaf_hashes(leaves)
    for size in (1, 2, 63, 64, 77):
        indices = np.arange(size, dtype=np.int64)
        proofs, lengths = tree.inclusion_proofs(indices, size)
        for m in range(size):
            got = [bytes(x) for x in proofs[m, : lengths[m]]]
            assert got == tree.inclusion_proof(m, size) == reference_inclusion(m, leaves[:size])
