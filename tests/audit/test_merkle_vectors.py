"""transparency-dev/merkle's known answers and corrupt probes against our RFC 9162 Merkle code.

The values below are copied from https://github.com/transparency-dev/merkle at commit
417fb0c314750d94e53942e9f92e79b6d35915db (Copyright 2017-2025 Google LLC, licensed under the
Apache License, Version 2.0: http://www.apache.org/licenses/LICENSE-2.0):

- testonly/constants.go: LeafInputs, NodeHashes, RootHashes, CompactTrees;
- testonly/reference_test.go: TestRefInclusionProof, TestRefConsistencyProof;
- cmd/proofgen/main.go: the golden proofs and the rules that turn each into the "corrupt
  probes" of testdata/inclusion/**.json and testdata/consistency/**.json, which
  proof/verify_test.go feeds to VerifyInclusion and VerifyConsistency;
- proof/proof_test.go: TestInclusion and TestConsistency, which tree nodes make each proof.

The probes are rebuilt here by proofgen's rules (`upstream_inclusion_probes`,
`upstream_consistency_probes`) rather than copied file by file; the SHA-256 of their
canonical lines (`_line`) equals the one computed over the upstream JSON files when they were
copied, so the set checked is exactly upstream's: 98 inclusion and 98 consistency probes.
Subtree proofs (testdata/subtree*) are not ours to check: Consentry serves none.

What runs them: `verify_inclusion` and `verify_consistency` are what `consentry audit prove`
and `consentry audit consistency` check a proof with before printing it; `inclusion_ranges`
and `consistency_ranges` are how `AuditLog.prove` / `AuditLog.consistency` (the CLI and
`GET /v1/audit/proof`, `/v1/audit/consistency`) pick the stored subtrees a proof is made of.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from consentry.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    consistency_ranges,
    inclusion_ranges,
    leaf_hash,
    range_nodes,
    reference_consistency,
    reference_inclusion,
    verify_consistency,
    verify_inclusion,
)


def _h(*hexes: str) -> tuple[bytes, ...]:
    return tuple(bytes.fromhex(x) for x in hexes)


# --- testonly/constants.go ------------------------------------------------------------------

LEAF_INPUTS = _h(
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)
NODE_HASHES = (
    _h(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ),
    _h(
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ),
    _h(
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ),
    _h("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
)
"""NODE_HASHES[level][index]: every complete subtree of the tree of LEAF_INPUTS."""

ROOT_HASHES = _h(
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)
"""ROOT_HASHES[n]: the root of the first n LEAF_INPUTS (n = 0 is the empty tree)."""

COMPACT_TREES: tuple[tuple[tuple[int, int], ...], ...] = (
    (),
    ((0, 0),),
    ((1, 0),),
    ((1, 0), (0, 2)),
    ((2, 0),),
    ((2, 0), (0, 4)),
    ((2, 0), (1, 2)),
    ((2, 0), (1, 2), (0, 6)),
    ((3, 0),),
)
"""COMPACT_TREES[n]: the (level, index) of the complete subtrees the tree of size n ends in."""

# --- testonly/reference_test.go -------------------------------------------------------------

REF_INCLUSION: tuple[tuple[int, int, tuple[bytes, ...]], ...] = (
    (0, 1, ()),
    (0, 2, _h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")),
    (1, 2, _h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")),
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
)
"""(leaf index, tree size, PATH(index, D[size])) over LEAF_INPUTS."""

REF_CONSISTENCY: tuple[tuple[int, int, tuple[bytes, ...]], ...] = (
    (1, 1, ()),
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
        2,
        5,
        _h(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
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
)
"""(size1, size2, PROOF(size1, D[size2])) over LEAF_INPUTS."""

# --- cmd/proofgen/main.go -------------------------------------------------------------------

SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")

# proofgen lists leaf indices 1-based ({1, 1}, {1, 8}, {6, 8}, {3, 3}, {2, 5}) and hashes
# leaves[leafIdx-1] of its own list, which for those indices are LEAF_INPUTS[leafIdx-1];
# written 0-based here. Probe group i of testdata/inclusion is GOLDEN_INCLUSION[i].
GOLDEN_INCLUSION: tuple[tuple[int, int, tuple[bytes, ...]], ...] = (
    (0, 1, ()),
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
)
GOLDEN_CONSISTENCY: tuple[tuple[int, int, tuple[bytes, ...]], ...] = (
    (1, 1, ()),
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
)

# SHA-256 of the sorted canonical lines of every upstream probe file (see `_line`), computed
# from testdata/inclusion/**.json and testdata/consistency/**.json at the commit above.
UPSTREAM_INCLUSION_PROBES = (98, "57045281003b1ddb5a0ad45347c53f057907b174bc7729a20cd70f1d06039be9")
UPSTREAM_CONSISTENCY_PROBES = (
    98,
    "54390246b86511afa57ded708b83c19c5d2525df4fd5476d0b5f27e04b5b0c9c",
)

# --- proof/proof_test.go --------------------------------------------------------------------
# (size or size1, index or size2, begin, end, node ids): the proof is the nodes (level,
# index) in order, except that nodes[begin:end] (lower level first) fold into one element,
# a subtree on the tree's right edge; begin == end: no folding. None: no proof exists.

Node = tuple[int, int]
Shape = tuple[int, int, tuple[Node, ...]] | None

INCLUSION_SHAPES: tuple[tuple[int, int, Shape], ...] = (
    (0, 0, None),
    (0, 1, None),
    (1, 2, None),
    (0, 3, None),
    (7, 8, None),
    (1, 0, (0, 0, ())),
    (2, 0, (0, 0, ((0, 1),))),
    (2, 1, (0, 0, ((0, 0),))),
    (3, 1, (1, 2, ((0, 0), (0, 2)))),
    (7, 0, (2, 4, ((0, 1), (1, 1), (0, 6), (1, 2)))),
    (7, 1, (2, 4, ((0, 0), (1, 1), (0, 6), (1, 2)))),
    (7, 2, (2, 4, ((0, 3), (1, 0), (0, 6), (1, 2)))),
    (7, 3, (2, 4, ((0, 2), (1, 0), (0, 6), (1, 2)))),
    (7, 4, (1, 2, ((0, 5), (0, 6), (2, 0)))),
    (7, 5, (1, 2, ((0, 4), (0, 6), (2, 0)))),
    (7, 6, (0, 0, ((1, 2), (2, 0)))),
    (4, 2, (0, 0, ((0, 3), (1, 0)))),
    (5, 3, (2, 3, ((0, 2), (1, 0), (0, 4)))),
    (6, 3, (2, 3, ((0, 2), (1, 0), (1, 2)))),
    (6, 4, (0, 0, ((0, 5), (2, 0)))),
    (15, 10, (2, 4, ((0, 11), (1, 4), (0, 14), (1, 6), (3, 0)))),
    (31, 24, (2, 4, ((0, 25), (1, 13), (0, 30), (1, 14), (3, 2), (4, 0)))),
    (
        95,
        81,
        (3, 6, ((0, 80), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0))),
    ),
)
CONSISTENCY_SHAPES: tuple[tuple[int, int, Shape], ...] = (
    (5, 0, None),
    (9, 8, None),
    (0, 5, None),
    (0, 0, None),
    (1, 2, (0, 0, ((0, 1),))),
    (1, 4, (0, 0, ((0, 1), (1, 1)))),
    (1, 6, (2, 3, ((0, 1), (1, 1), (1, 2)))),
    (2, 3, (0, 1, ((0, 2),))),
    (2, 8, (0, 0, ((1, 1), (2, 1)))),
    (3, 7, (3, 5, ((0, 2), (0, 3), (1, 0), (0, 6), (1, 2)))),
    (4, 7, (0, 2, ((0, 6), (1, 2)))),
    (5, 7, (2, 3, ((0, 4), (0, 5), (0, 6), (2, 0)))),
    (6, 7, (1, 2, ((1, 2), (0, 6), (2, 0)))),
    (7, 8, (0, 0, ((0, 6), (0, 7), (1, 2), (2, 0)))),
    *((n, n, (0, 0, ())) for n in (1, 2, 3, 4, 5, 7, 8)),
    (2, 4, (0, 0, ((1, 1),))),
    (3, 5, (3, 4, ((0, 2), (0, 3), (1, 0), (0, 4)))),
    (3, 6, (3, 4, ((0, 2), (0, 3), (1, 0), (1, 2)))),
    (4, 6, (0, 1, ((1, 2),))),
    (1, 7, (2, 4, ((0, 1), (1, 1), (0, 6), (1, 2)))),
    (10, 15, (2, 4, ((1, 4), (1, 5), (0, 14), (1, 6), (3, 0)))),
    (24, 31, (1, 4, ((3, 2), (0, 30), (1, 14), (2, 6), (4, 0)))),
    (
        81,
        95,
        (4, 7, ((0, 80), (0, 81), (1, 41), (2, 21), (0, 94), (1, 46), (2, 22), (4, 4), (6, 0))),
    ),
)


# --- the probes, rebuilt by proofgen's rules ------------------------------------------------

_U64 = (1 << 64) - 1  # Go's uint64: index 0 minus 1 wraps to 2^64 - 1


class InclusionProbe(NamedTuple):
    leaf_index: int
    tree_size: int
    root: bytes
    leaf_hash: bytes
    proof: tuple[bytes, ...]
    desc: str
    want_error: bool

    def verifies(self) -> bool:
        return verify_inclusion(
            self.leaf_index, self.tree_size, self.leaf_hash, self.proof, self.root
        )


class ConsistencyProbe(NamedTuple):
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: tuple[bytes, ...]
    desc: str
    want_error: bool

    def verifies(self) -> bool:
        return verify_consistency(self.size1, self.size2, self.proof, self.root1, self.root2)


def _flip(proof: Sequence[bytes], i: int, mask: int) -> tuple[bytes, ...]:
    wrong = list(proof)
    wrong[i] = bytes([wrong[i][0] ^ mask]) + wrong[i][1:]
    return tuple(wrong)


def inclusion_corruptions(
    index: int, size: int, proof: Sequence[bytes], root: bytes, leaf: bytes
) -> list[InclusionProbe]:
    """proofgen's invalidInclusionProof: every probe must fail."""
    p = tuple(proof)
    specs: list[tuple[int, int, bytes, bytes, tuple[bytes, ...], str]] = [
        ((index - 1) & _U64, size, root, leaf, p, "leafIdx sub @1"),
        (index + 1, size, root, leaf, p, "leafIdx plus @1"),
        (index ^ 2, size, root, leaf, p, "leafIdx XOR @2"),
        (index, size * 2, root, leaf, p, "treeSize mul @2"),
        (index, size // 2, root, leaf, p, "treeSize div @2"),
        (index, size, root, b"WrongLeaf", p, "wrong leaf"),
        (index, size, EMPTY_ROOT, leaf, p, "empty root"),
        (index, size, SOME_HASH, leaf, p, "random root"),
        (index, size, root, leaf, (*p, b""), "trailing garbage"),
        (index, size, root, leaf, (*p, root), "trailing root"),
        (index, size, root, leaf, (b"", *p), "preceding garbage"),
        (index, size, root, leaf, (root, *p), "preceding root"),
    ]
    specs += [
        (index, size, root, leaf, _flip(p, i, 8), f"modified proof[{i}] bit @3")
        for i in range(len(p))
    ]
    if p:
        specs.append((index, size, root, leaf, p[:-1], "removed component"))
    if len(p) > 1:
        specs.append((index, size, root, leaf, (p[0], SOME_HASH, *p[1:]), "inserted component"))
    return [InclusionProbe(*spec, want_error=True) for spec in specs]


def consistency_corruptions(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> list[ConsistencyProbe]:
    """proofgen's invalidConsistencyProof (for a non-empty proof): every probe must fail."""
    p = tuple(proof)
    specs: list[tuple[int, int, bytes, bytes, tuple[bytes, ...], str]] = [
        ((size1 - 1) & _U64, size2, root1, root2, p, "size1 sub @1"),
        (size1 + 1, size2, root1, root2, p, "size1 plus @1"),
        (size1 ^ 2, size2, root1, root2, p, "size1 XOR @2"),
        (size1, size2 * 2, root1, root2, p, "size2 mul @2"),
        (size1, size2 // 2, root1, root2, p, "size2 div @2"),
        (size1, size2, b"WrongRoot", root2, p, "wrong root1"),
        (size1, size2, root1, b"WrongRoot", p, "wrong root2"),
        (size1, size2, root2, root1, p, "swapped roots"),
        (size1, size2, root1, root2, (), "empty proof"),
        (size1, size2, root1, root2, (*p, b""), "trailing garbage"),
        (size1, size2, root1, root2, (*p, root1), "trailing root1"),
        (size1, size2, root1, root2, (*p, root2), "trailing root2"),
        (size1, size2, root1, root2, (b"", *p), "preceding garbage"),
        (size1, size2, root1, root2, (root1, *p), "preceding root1"),
        (size1, size2, root1, root2, (root2, *p), "preceding root2"),
        (size1, size2, root1, root2, (p[0], *p), "preceding proof @0"),
    ]
    specs.append((size1, size2, root1, root2, p[:-1], "truncated proof"))
    specs += [
        (size1, size2, root1, root2, _flip(p, i, 16), f"modified proof@{i} bit @4")
        for i in range(len(p))
    ]
    return [ConsistencyProbe(*spec, want_error=True) for spec in specs]


def upstream_inclusion_probes() -> list[tuple[str, InclusionProbe]]:
    """(directory under testdata/inclusion, probe) for every file proofgen writes there."""
    probes: list[tuple[str, InclusionProbe]] = []
    for group, (index, size, proof) in enumerate(GOLDEN_INCLUSION):
        root, leaf = ROOT_HASHES[size], leaf_hash(LEAF_INPUTS[index])
        probes.append(
            (str(group), InclusionProbe(index, size, root, leaf, proof, "happy path", False))
        )
        probes += [(str(group), p) for p in inclusion_corruptions(index, size, proof, root, leaf)]
    for group, (index, size) in enumerate(((0, 0), (0, 1), (1, 0), (2, 1))):
        where = f"additional/{group}"
        probes += [
            (where, InclusionProbe(index, size, b"", SOME_HASH, (), "random leaf", True)),
            (where, InclusionProbe(index, size, EMPTY_ROOT, b"", (), "empty root", True)),
            (
                where,
                InclusionProbe(
                    index, size, EMPTY_ROOT, SOME_HASH, (), "empty root and random leaf", True
                ),
            ),
        ]
    data = leaf_hash(b"data")  # a one-leaf tree: its root is its leaf hash, its proof empty
    probes += [
        ("single-entry", InclusionProbe(0, 1, data, data, (), "matching root and leaf", False)),
        ("single-entry", InclusionProbe(0, 1, data, b"", (), "empty leaf", True)),
        ("single-entry", InclusionProbe(0, 1, b"", data, (), "empty root", True)),
        ("single-entry", InclusionProbe(0, 1, b"", b"", (), "empty root and leaf", True)),
    ]
    return probes


def upstream_consistency_probes() -> list[tuple[str, ConsistencyProbe]]:
    """(directory under testdata/consistency, probe) for every file proofgen writes there."""
    probes: list[tuple[str, ConsistencyProbe]] = []
    for group, (size1, size2, proof) in enumerate(GOLDEN_CONSISTENCY):
        root1, root2 = ROOT_HASHES[size1], ROOT_HASHES[size2]
        happy = ConsistencyProbe(size1, size2, root1, root2, proof, "happy path", False)
        probes.append((str(group), happy))
        if proof:  # proofgen corrupts only non-trivial proofs
            corrupt = consistency_corruptions(size1, size2, proof, root1, root2)
            probes += [(str(group), p) for p in corrupt]
    one, two, empty = b"don't care 1", b"don't care 2", EMPTY_ROOT
    static = [
        (0, 0, one, two, (), "sizes are equal (zero) but roots are not", True),
        (1, 1, one, two, (), "sizes are equal (one) but roots are not", True),
        (0, 0, one, one, (), "sizes are equal (zero) and proof is empty", True),
        (0, 1, one, two, (), "size1 is zero and does not equal size2", True),
        (1, 1, two, two, (), "sizes are equal (one) and proof is empty", False),
        (1, 0, one, two, (), "size1 is greater than size2", True),
        (2, 1, one, two, (), "size1 is greater than size2 again", True),
        (1, 2, one, two, (), "sizes do not watch and proof is empty", True),
        (0, 0, empty, two, (), "roots do not match and sizes are zero", True),
        (1, 1, empty, two, (), "roots do not not match and sizes are one", True),
        (
            0,
            0,
            empty,
            empty,
            (empty,),
            "sizes match but proof is not empty and sizes are zero",
            True,
        ),
        (
            1,
            1,
            empty,
            empty,
            (empty,),
            "sizes match but proof is not empty and sizes are one",
            True,
        ),
        (0, 1, empty, two, (), "size1 is zero and size2 is not zero", True),
        (
            0,
            1,
            empty,
            empty,
            (empty,),
            "consistency check on empty tree (size1 is zero) is useless",
            True,
        ),
    ]
    probes += [("additional", ConsistencyProbe(*spec)) for spec in static]
    return probes


def _line(where: str, probe: InclusionProbe | ConsistencyProbe) -> str:
    """One probe file as text: directory, desc, the two sizes, the two hashes, the proof
    (hex), wantErr; upstream's null and empty byte strings both read as empty."""
    a, b, x, y, proof, desc, want_error = probe
    hexes = ",".join(h.hex() for h in proof)
    return f"{where}|{desc}|{a}|{b}|{x.hex()}|{y.hex()}|{hexes}|{int(want_error)}"


def _digest(probes: Sequence[tuple[str, InclusionProbe | ConsistencyProbe]]) -> tuple[int, str]:
    lines = sorted({_line(where, probe) for where, probe in probes})
    return len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()


TREE = MemoryTree.from_leaf_hashes([leaf_hash(x) for x in LEAF_INPUTS])


# --- the tests ------------------------------------------------------------------------------


def test_rebuilt_probes_are_exactly_the_upstream_files() -> None:
    assert _digest(upstream_inclusion_probes()) == UPSTREAM_INCLUSION_PROBES
    assert _digest(upstream_consistency_probes()) == UPSTREAM_CONSISTENCY_PROBES


def test_every_upstream_inclusion_probe() -> None:
    wrong = [
        f"{where}: {probe.desc}"
        for where, probe in upstream_inclusion_probes()
        if probe.verifies() == probe.want_error
    ]
    assert wrong == []


def test_every_upstream_consistency_probe() -> None:
    wrong = [
        f"{where}: {probe.desc}"
        for where, probe in upstream_consistency_probes()
        if probe.verifies() == probe.want_error
    ]
    assert wrong == []


@pytest.mark.parametrize("size", range(9))
def test_roots_node_hashes_and_compact_trees(size: int) -> None:
    assert TREE.root(size) == ROOT_HASHES[size]
    assert TREE.frontier(size) == [NODE_HASHES[h][i] for h, i in COMPACT_TREES[size]]


def test_every_complete_subtree() -> None:
    for level, hashes in enumerate(NODE_HASHES):
        assert [TREE.complete(level, i) for i in range(len(hashes))] == list(hashes)
        # One past the last complete subtree of a level is not a subtree: no stale bytes.
        with pytest.raises(IndexError, match="no complete subtree"):
            TREE.complete(level, len(hashes))
    assert len(TREE.levels) == len(NODE_HASHES)


@pytest.mark.parametrize(("index", "size", "proof"), REF_INCLUSION + GOLDEN_INCLUSION)
def test_known_inclusion_proofs(index: int, size: int, proof: tuple[bytes, ...]) -> None:
    leaves = [leaf_hash(x) for x in LEAF_INPUTS[:size]]
    assert TREE.inclusion_proof(index, size) == list(proof)
    assert reference_inclusion(index, leaves) == list(proof)
    assert verify_inclusion(index, size, leaves[index], proof, ROOT_HASHES[size])


@pytest.mark.parametrize(("size1", "size2", "proof"), REF_CONSISTENCY + GOLDEN_CONSISTENCY)
def test_known_consistency_proofs(size1: int, size2: int, proof: tuple[bytes, ...]) -> None:
    leaves = [leaf_hash(x) for x in LEAF_INPUTS[:size2]]
    assert TREE.consistency_proof(size1, size2) == list(proof)
    assert reference_consistency(size1, leaves) == list(proof)
    assert verify_consistency(size1, size2, proof, ROOT_HASHES[size1], ROOT_HASHES[size2])


def _shape(ranges: list[tuple[int, int]], size: int) -> Shape:
    """Our leaf ranges written as proof_test.go writes a proof: the complete subtrees in
    order, and where the one folded element sits. That element stands in for the node on
    the tree's right edge that is not complete at `size`: a range [a, size) shorter than the
    block of 2^k leaves its start is aligned to (a & -a). Its subtrees come lower level first.
    """
    nodes: list[Node] = []
    begin = end = 0
    for lo, hi in ranges:
        parts = range_nodes(lo, hi)
        if hi == size and hi - lo < (lo & -lo):
            begin, end = len(nodes), len(nodes) + len(parts)
        nodes += reversed(parts)
    return begin, end, tuple(nodes)


@pytest.mark.parametrize(("size", "index", "want"), INCLUSION_SHAPES)
def test_inclusion_proof_shapes(size: int, index: int, want: Shape) -> None:
    if want is None:
        with pytest.raises(ValueError, match="not in a tree"):
            inclusion_ranges(index, size)
    else:
        assert _shape(inclusion_ranges(index, size), size) == want


@pytest.mark.parametrize(("size1", "size2", "want"), CONSISTENCY_SHAPES)
def test_consistency_proof_shapes(size1: int, size2: int, want: Shape) -> None:
    if want is None:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_ranges(size1, size2)
    else:
        assert _shape(consistency_ranges(size1, size2), size2) == want
