"""Step 1 of the columnar path: attribution per distinct credential (package doc)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.scraping.arrays import run_lasts
from consentry.scraping.attribution import Owners, owner_candidates
from consentry.scraping.rules import I64


def pair_search(k_major: I64, k_minor: I64, q_major: I64, q_minor: I64) -> I64:
    """For keys sorted by (major, minor): the index of the last key <= each query pair
    (-1: none), lexicographically. One binary search over a composite int64 key when it
    cannot overflow, else one search per distinct major value."""
    if len(k_major) == 0 or len(q_major) == 0:
        return np.full(len(q_major), -1, dtype=np.int64)
    m0 = int(min(int(k_major.min()), int(q_major.min())))
    m1 = int(max(int(k_major.max()), int(q_major.max())))
    base = int(min(int(k_minor.min()), int(q_minor.min())))
    stride = int(max(int(k_minor.max()), int(q_minor.max()))) - base + 1
    if (m1 - m0 + 1) * stride < (1 << 62):
        keys = (k_major - m0) * stride + (k_minor - base)
        return np.searchsorted(keys, (q_major - m0) * stride + (q_minor - base), side="right") - 1
    out = np.full(len(q_major), -1, dtype=np.int64)
    for major in np.unique(q_major).tolist():
        a = int(np.searchsorted(k_major, major, side="left"))
        b = int(np.searchsorted(k_major, major, side="right"))
        rows = np.flatnonzero(q_major == major)
        pos = np.searchsorted(k_minor[a:b], q_minor[rows], side="right") - 1
        out[rows] = np.where(pos >= 0, pos + a, np.searchsorted(k_major, major, "left") - 1)
    return out


# ----------------------------------------------------------------------------- attribution


@dataclass(frozen=True, slots=True)
class CredentialMap:
    """Distinct credentials resolved to entities (module doc, step 1).

    `code[i]` is the entity code of credential i when static, else `-(d + 1)` for dynamic
    credential d, whose segments are rows of `seg_dyn`/`seg_from`/`seg_code` (sorted by
    dynamic index, then start; the first segment of each starts at its first access).
    `names` are the entity names, sorted (code = index).
    """

    credentials: pa.Array
    code: npt.NDArray[np.int32]
    names: pa.Array
    seg_dyn: I64
    seg_from: I64
    seg_code: I64

    @property
    def dynamic(self) -> bool:
        return len(self.seg_dyn) > 0

    def codes_at(self, cred_code: npt.NDArray[np.int32], ts: I64) -> npt.NDArray[np.int32]:
        """Entity code of each access from its credential's code and its instant."""
        out = np.asarray(cred_code, dtype=np.int32).copy()
        dyn = np.flatnonzero(out < 0)
        if len(dyn) == 0:
            return out
        d = (-out[dyn].astype(np.int64)) - 1
        # Every access is at or after its credential's first segment (spans start there).
        pos = pair_search(self.seg_dyn, self.seg_from, d, ts[dyn])
        out[dyn] = self.seg_code[pos].astype(np.int32)
        return out


def resolve_credentials(
    credentials: pa.Array, first: I64, last: I64, owners: Owners
) -> CredentialMap:
    """Resolve every distinct credential over its span `[first, last]` (module doc, step 1).

    Rules as `attribution.attribute`: exact match beats any prefix, the longest prefix beats
    shorter ones, validity `[valid_from, valid_to)`, nobody: the credential itself.

    1. The owner candidates of the credentials, grouped by credential (`_Candidates`).
    2. Per credential with candidates, its owner over its span (`_owner_pieces`): one
       owner over the whole span (static), or pieces `[from, next from) -> entity`
       (dynamic). A credential without candidates is its own entity.
    3. Entity codes: ranks of the sorted entity names (`_coded`).
    """
    creds = credentials.cast(pa.string())
    entity_of: dict[int, str] = {}
    segments: list[tuple[int, int, str]] = []  # (credential index, from, entity)
    candidates = _Candidates.of(creds, owners)
    if candidates.credential:
        names_py = creds.to_pylist()
        for k, j in candidates.runs():
            ci = candidates.credential[k]
            span = (int(first[ci]), int(last[ci]))
            pieces = _owner_pieces(candidates, range(k, j), span, names_py[ci])
            if len(pieces) == 1:
                entity_of[ci] = pieces[0][1]
            else:
                segments += [(ci, at, ent) for at, ent in pieces]
    return _coded(creds, entity_of, segments)


class _Candidates(NamedTuple):
    """Owner candidates of known credentials as lists, grouped by credential index (in
    the order `owner_candidates` gives them within a credential)."""

    credential: list[int]
    entity: list[str]
    valid_from: list[int]
    valid_to: list[int]
    specificity: list[int]

    @classmethod
    def of(cls, creds: pa.Array, owners: Owners) -> _Candidates:
        cand = owner_candidates(creds, owners)
        idx = pc.index_in(cand["credential"], value_set=creds)
        valid = pc.is_valid(idx)
        cand = cand.filter(valid)
        idx_np = np.asarray(pc.filter(idx, valid).to_numpy(zero_copy_only=False), dtype=np.int64)
        order = np.argsort(idx_np, kind="stable")
        taken = pa.array(order)
        return cls(
            credential=idx_np[order].tolist(),
            entity=cand["entity"].take(taken).to_pylist(),
            valid_from=cand["valid_from"].cast(pa.int64()).take(taken).to_pylist(),
            valid_to=cand["valid_to"].cast(pa.int64()).take(taken).to_pylist(),
            specificity=cand["specificity"].take(taken).to_pylist(),
        )

    def runs(self) -> Iterator[tuple[int, int]]:
        """`[k, j)` of each credential's candidates."""
        k, total = 0, len(self.credential)
        while k < total:
            j = k
            while j < total and self.credential[j] == self.credential[k]:
                j += 1
            yield k, j
            k = j


def _owner_pieces(
    candidates: _Candidates, rows: range, span: tuple[int, int], itself: str
) -> list[tuple[int, str]]:
    """The owner of one credential over `span` (first and last access) as pieces
    `(from, entity)`, a piece where the owner changes.

    1. The owner can change only at the span's start and at a candidate's validity edge
       inside the span.
    2. At each such instant the candidate valid then with the highest specificity wins
       (the first on a tie); none valid: the credential itself.
    """
    lo, hi = span
    c_from, c_to, c_spec = candidates.valid_from, candidates.valid_to, candidates.specificity
    cuts = sorted(
        {lo}
        | {c_from[r] for r in rows if lo < c_from[r] <= hi}
        | {c_to[r] for r in rows if lo < c_to[r] <= hi}
    )
    pieces: list[tuple[int, str]] = []
    for at in cuts:
        best_spec, best = -1, itself
        for r in rows:
            if c_from[r] <= at < c_to[r] and c_spec[r] > best_spec:
                best_spec, best = c_spec[r], candidates.entity[r]
        if not pieces or pieces[-1][1] != best:
            pieces.append((at, best))
    return pieces


def _coded(
    creds: pa.Array, entity_of: dict[int, str], segments: list[tuple[int, int, str]]
) -> CredentialMap:
    """The map from each static credential's entity (itself unless in `entity_of`) and the
    dynamic credentials' `segments`: entity names sorted, codes their ranks."""
    static_names = _static_names(creds, entity_of)
    dyn_creds = sorted({ci for ci, _, _ in segments})
    dyn_index = {ci: d for d, ci in enumerate(dyn_creds)}
    seg_names = pa.array([ent for _, _, ent in segments], pa.string())
    all_names = pc.unique(pa.concat_arrays([static_names, seg_names]))
    names = all_names.take(pc.sort_indices(all_names))
    code = np.array(
        pc.index_in(static_names, value_set=names).to_numpy(zero_copy_only=False), dtype=np.int32
    )
    for ci, d in dyn_index.items():
        code[ci] = -(d + 1)
    if segments:
        seg_dyn = np.array([dyn_index[ci] for ci, _, _ in segments], dtype=np.int64)
        seg_from = np.array([at for _, at, _ in segments], dtype=np.int64)
        seg_code = np.asarray(
            pc.index_in(seg_names, value_set=names).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        order = np.lexsort((seg_from, seg_dyn))
        seg_dyn, seg_from, seg_code = seg_dyn[order], seg_from[order], seg_code[order]
    else:
        seg_dyn = seg_from = seg_code = np.zeros(0, dtype=np.int64)
    return CredentialMap(creds, code, names, seg_dyn, seg_from, seg_code)


def _static_names(creds: pa.Array, entity_of: dict[int, str]) -> pa.Array:
    """Each credential's static entity: `entity_of[i]` where given, else itself."""
    if not entity_of:
        return creds
    n = len(creds)
    keys = np.fromiter(entity_of.keys(), dtype=np.int64, count=len(entity_of))
    mask = np.zeros(n, dtype=bool)
    mask[keys] = True
    replaced = np.empty(n, dtype=object)
    replaced[keys] = list(entity_of.values())
    pylist = np.asarray(creds.to_numpy(zero_copy_only=False), dtype=object)
    pylist[mask] = replaced[mask]
    return pa.array(pylist, pa.string())


def segments_table(credential_map: CredentialMap) -> pa.Table:
    """Dynamic credentials' segments as `[lo, hi) -> code` rows keyed by the credential's
    placeholder code `-(d + 1)` (the last segment of each is open-ended)."""
    d = credential_map.seg_dyn
    hi = np.r_[credential_map.seg_from[1:], 0]
    hi[run_lasts(d)] = np.iinfo(np.int64).max
    return pa.table(
        {
            "dcode": pa.array((-(d + 1)).astype(np.int32), pa.int32()),
            "lo": pa.array(credential_map.seg_from),
            "hi": pa.array(hi),
            "code": pa.array(credential_map.seg_code.astype(np.int32), pa.int32()),
        }
    )
