"""RFC 9162 hashing and proofs: edge cases, and property tests against the RFC's recursive
definitions where every proof of a random tree verifies and each of transparency-dev/merkle's
corruptions of it fails (the known answers are in test_merkle_vectors.py)."""

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
    range_nodes,
    reference_consistency,
    reference_inclusion,
    reference_root,
    subtree_count,
    verify_consistency,
    verify_inclusion,
)
from tests.audit.test_merkle_vectors import (
    SOME_HASH,
    consistency_corruptions,
    inclusion_corruptions,
)


def test_empty_tree_and_hashes() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MemoryTree().root() == EMPTY_ROOT == reference_root([])
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_inclusion_edge_cases_fail() -> None:
    for index, size in ((0, 0), (1, 0), (2, 1), (-1, 1)):
        assert not verify_inclusion(index, size, SOME_HASH, [], EMPTY_ROOT)
    one = leaf_hash(b"data")
    assert verify_inclusion(0, 1, one, [], one)
    assert not verify_inclusion(0, 1, one, [], b"")
    assert not verify_inclusion(0, 1, b"", [], one)


def test_consistency_edge_cases() -> None:
    r1, r2 = b"1" * 32, b"2" * 32
    assert verify_consistency(1, 1, [], r2, r2)
    # No proof from the empty tree, however well-formed (RFC 9162 §2.1.4: 0 < m).
    assert not verify_consistency(0, 0, [], r1, r1)
    assert not verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_consistency(0, 1, [], EMPTY_ROOT, r2)
    assert not verify_consistency(0, 1, [], r1, r2)
    assert not verify_consistency(0, 0, [], r1, r2)
    assert not verify_consistency(1, 1, [], r1, r2)
    assert not verify_consistency(1, 0, [], r1, r2)
    assert not verify_consistency(2, 1, [], r1, r2)
    assert not verify_consistency(1, 2, [], r1, r2)
    assert not verify_consistency(-1, 1, [], r1, r2)
    assert not verify_consistency(0, 1, [EMPTY_ROOT], r1, r1)
    assert not verify_consistency(1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT)


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_a_wrong_first_root_of_the_right_length_fails() -> None:
    """Step 7 checks the first root too. A wrong first root of 32 bytes passes the form
    check, so only that comparison can refuse it; for a first size that is not a power of
    two, the proof alone rebuilds the second root, so nothing else would. Sizes: 3 -> 7,
    5 -> 8, 6 -> 13 (not powers of two), and 4 -> 9 (a power of two, first root prepended)."""
    leaves = _leaves(13)
    tree = MemoryTree.from_leaf_hashes(leaves)
    other = MemoryTree.from_leaf_hashes(_leaves(20)[7:])  # different leaves, same sizes
    for first, second in ((3, 7), (5, 8), (6, 13), (4, 9)):
        proof = tree.consistency_proof(first, second)
        r1, r2 = tree.root(first), tree.root(second)
        assert verify_consistency(first, second, proof, r1, r2)
        for wrong in (SOME_HASH, other.root(first), bytes(32), r2):
            assert len(wrong) == 32
            assert wrong != r1
            assert not verify_consistency(first, second, proof, wrong, r2), (first, wrong)


def test_hashes_of_the_wrong_length_fail_even_where_the_arithmetic_would_match() -> None:
    """From a first size that is a power of two, the first root starts both paths, and the
    second root may be built from it: only the form check refuses a first root or a proof
    hash that is not 32 bytes (4 -> 8 with one proof hash: fr stays the first root)."""
    good = leaf_hash(b"c")
    for short in (b"\x01" * 5, b"\x01" * 33, b""):
        assert not verify_consistency(4, 8, [good], short, node_hash(short, good))
        first_root = leaf_hash(b"r")
        assert not verify_consistency(4, 8, [short], first_root, node_hash(first_root, short))
    # The same shape with well-formed hashes is accepted: the refusals above are the form's.
    first_root = leaf_hash(b"r")
    assert verify_consistency(4, 8, [good], first_root, node_hash(first_root, good))


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
            p.desc for p in consistency_corruptions(first, second, proof, r1, r2) if p.verifies()
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
        p.desc
        for p in inclusion_corruptions(index, size, proof, root, leaves[index])
        if p.verifies()
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


def test_batched_proofs_keep_path_order_in_trees_more_than_sixteen_levels_deep() -> None:
    """Rows with missing levels are packed leaf side first by a stable sort; past 16 levels
    NumPy's default sort is not stable, so a tree of 2^16 + 3 leaves checks the order."""
    size = 2**16 + 3
    tree = MemoryTree.from_leaf_hashes(_leaves(size))
    indices = np.array([0, 1, size - 4, size - 3, size - 2, size - 1], dtype=np.int64)
    proofs, lengths = tree.inclusion_proofs(indices, size)
    assert proofs.shape[1] == 17
    for row, m in enumerate(indices.tolist()):
        assert [bytes(x) for x in proofs[row, : lengths[row]]] == tree.inclusion_proof(m, size)


def test_batched_proofs_have_one_row_per_level_and_refuse_indices_outside_the_tree() -> None:
    """Shape (leaves, ceil(log2 size), 32) at every size, including sizes that are multiples
    of a level's width with an odd count of subtrees (96 = 3 x 32)."""
    leaves = _leaves(100)
    tree = MemoryTree.from_leaf_hashes(leaves)
    assert tree.leaf_hashes() == b"".join(leaves)
    for size in (1, 2, 3, 5, 64, 96, 100):
        indices = np.arange(size, dtype=np.int64)
        proofs, lengths = tree.inclusion_proofs(indices, size)
        assert proofs.shape == (size, (size - 1).bit_length(), 32)
        for m in range(size):
            assert [bytes(x) for x in proofs[m, : lengths[m]]] == tree.inclusion_proof(m, size)
    for bad in ([-1], [0, 5], [5]):
        with pytest.raises(ValueError, match="leaf indices"):
            tree.inclusion_proofs(np.array(bad, dtype=np.int64), 5)
    empty, none = tree.inclusion_proofs(np.array([], dtype=np.int64), 5)
    assert (empty.shape, none.tolist()) == ((0, 3, 32), [])


def test_range_nodes_fold_a_range_left_to_right_and_an_empty_range_into_nothing() -> None:
    assert range_nodes(5, 5) == []
    assert range_nodes(0, 1) == [(0, 0)]
    assert range_nodes(8, 13) == [(2, 2), (0, 12)]
    assert range_nodes(0, 7) == [(2, 0), (1, 2), (0, 6)]


def test_a_tree_has_size_over_two_to_the_level_complete_subtrees_per_level() -> None:
    for size in range(0, 40):
        for level in range(0, 7):
            assert subtree_count(size, level) == size // 2**level


def test_every_proof_between_small_trees_verifies() -> None:
    """All sizes up to 40, so every shape of RFC 9162's loops is met (for instance 13 -> 14,
    where the two paths meet at an even node and shift together), not only random ones."""
    leaves = _leaves(40)
    tree = MemoryTree.from_leaf_hashes(leaves)
    roots = [tree.root(n) for n in range(41)]
    for n in range(1, 41):
        for m in range(1, n):
            proof = tree.consistency_proof(m, n)
            assert verify_consistency(m, n, proof, roots[m], roots[n]), (m, n)
        for index in range(n):
            proof = tree.inclusion_proof(index, n)
            assert verify_inclusion(index, n, leaves[index], proof, roots[n]), (index, n)
