"""Array idioms the scraping kernels share: runs of equal items, fields packed into one
uint64 sort key, growing buffers and concatenated index ranges.

Each helper allocates its result and nothing else of the input's size unless its doc says
so: these run over every access (tens of millions) on the columnar path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "U64",
    "BitLayout",
    "concat_ranges",
    "run_bounds",
    "run_ids",
    "run_lasts",
    "run_start_mask",
    "run_starts",
    "with_room",
]

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

_A = TypeVar("_A", bound=np.generic)


def with_room(arr: npt.NDArray[_A], n: int) -> npt.NDArray[_A]:
    """`arr` with room for at least `n` items (capacity doubles; contents kept)."""
    if n <= len(arr):
        return arr
    grown = np.zeros(max(n, 2 * len(arr), 1024), dtype=arr.dtype)
    grown[: len(arr)] = arr
    return grown


def concat_ranges(lo: I64, hi: I64) -> I64:
    """The indexes lo[0]..hi[0]-1, lo[1]..hi[1]-1, ... as one array."""
    size = hi - lo
    out: I64 = np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(int(size.sum()))
    return out


# ---------------------------------------------------------------------------------- runs
# A run is a maximal stretch of equal consecutive items: [3, 3, 5, 3] has the runs [3, 3],
# [5] and [3]. On sorted keys the runs are the groups (one per entity, window, chunk...).


def run_start_mask(x: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    """True at the first item of each run: item 0, and every item unequal to the one
    before it. `np.r_[True, x[1:] != x[:-1]]` written in place (one array, no copies)."""
    n = len(x)
    mask = np.empty(n, dtype=np.bool_)
    if n:
        mask[0] = True
        np.not_equal(x[1:], x[:-1], out=mask[1:])
    return mask


def run_starts(x: npt.NDArray[Any]) -> I64:
    """The index of the first item of each run, ascending (none for an empty `x`)."""
    return np.flatnonzero(run_start_mask(x)).astype(np.int64, copy=False)


def run_bounds(x: npt.NDArray[Any]) -> I64:
    """The run starts followed by `len(x)`: run k is `x[bounds[k]:bounds[k + 1]]`, so there
    is one bound more than runs (`[0]` for an empty `x`)."""
    n = len(x)
    edge = np.empty(n + 1, dtype=np.bool_)
    edge[0] = edge[n] = True
    if n > 1:
        np.not_equal(x[1:], x[:-1], out=edge[1:n])
    return np.flatnonzero(edge).astype(np.int64, copy=False)


def run_lasts(x: npt.NDArray[Any]) -> I64:
    """The index of the last item of each run, ascending (none for an empty `x`)."""
    n = len(x)
    last = np.empty(n, dtype=np.bool_)
    if n:
        last[n - 1] = True
        np.not_equal(x[1:], x[:-1], out=last[: n - 1])
    return np.flatnonzero(last).astype(np.int64, copy=False)


def run_ids(x: npt.NDArray[Any]) -> I64:
    """The number of each item's run: 0 for the first run, one more at each new run."""
    ids = np.zeros(len(x), dtype=np.int64)
    if len(x) > 1:
        np.cumsum(x[1:] != x[:-1], out=ids[1:])
    return ids


# ----------------------------------------------------------------------------- bit layout


@dataclass(frozen=True, slots=True)
class BitLayout:
    """Non-negative integer fields packed into one uint64 key per item, the first field in
    the highest bits: sorting the keys sorts the items by the fields in order (NumPy's SIMD
    sort of one uint64 array is far faster than a lexsort or an argsort).

    1. `widths[i]` bits hold field i (0 to 63 bits each, 64 at most in all); a field's
       values must be below `2 ** widths[i]` (the caller knows their range).
    2. `pack` builds the keys from the fields; `unpack` and `field` read fields back as
       int64 (a width of 0 reads back 0).
    """

    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.widths or min(self.widths) < 0 or max(self.widths) > 63:
            raise ValueError(f"field widths must be 0 to 63 bits, not {self.widths}")
        if sum(self.widths) > 64:
            raise ValueError(f"fields of {sum(self.widths)} bits do not fit in 64")

    @classmethod
    def fitting(cls, *widths: int, bits: int = 64) -> BitLayout | None:
        """The layout of `widths` when they fit in `bits` (at most 64) and none is over 63
        bits wide, else None (the caller sorts another way)."""
        if sum(widths) > min(bits, 64) or max(widths, default=0) > 63:
            return None
        return cls(widths)

    def shift(self, index: int) -> int:
        """Bits below field `index` (its lowest bit's position in the key)."""
        return sum(self.widths[index + 1 :])

    def pack(self, *fields: npt.NDArray[np.integer[Any]]) -> U64:
        """One key per item from one array per field (all of one length, unchanged).

        The key is the only new array: it starts as the first field and, field by field, is
        shifted left by the next width and OR-ed with the next field (cast in the ufunc's
        buffer, so no converted copy of a field is made)."""
        if len(fields) != len(self.widths):
            raise ValueError(f"{len(self.widths)} fields expected, {len(fields)} given")
        key = fields[0].astype(np.uint64)
        for values, width in zip(fields[1:], self.widths[1:], strict=True):
            if width:
                np.left_shift(key, np.uint64(width), out=key)
            np.bitwise_or(key, values, out=key, dtype=np.uint64, casting="unsafe")
        return key

    def unpack(self, key: U64, out: Sequence[I64] | None = None) -> tuple[I64, ...]:
        """Every field of `key` as int64, first field first, written into `out` (one array
        of len(key) per field, e.g. slices of larger ones) when given.

        Consumes `key`: it is shifted right in place, lowest field first, and without `out`
        the first field is `key` itself viewed as int64 (no copy)."""
        if out is not None and len(out) != len(self.widths):
            raise ValueError(f"{len(self.widths)} outputs expected, {len(out)} given")
        fields: list[I64] = []
        for index in range(len(self.widths) - 1, 0, -1):
            dest = np.empty(len(key), dtype=np.int64) if out is None else out[index]
            mask = np.uint64((1 << self.widths[index]) - 1)
            np.bitwise_and(key, mask, out=dest, dtype=np.uint64, casting="unsafe")
            if self.widths[index]:
                np.right_shift(key, np.uint64(self.widths[index]), out=key)
            fields.append(dest)
        if out is None:
            fields.append(key.view(np.int64))
        else:
            np.copyto(out[0], key, casting="unsafe")
            fields.append(out[0])
        return tuple(fields[::-1])

    def field(self, key: U64, index: int, out: npt.NDArray[Any] | None = None) -> I64:
        """Field `index` of every key as int64, into `out` when given (an int64 or uint64
        array of len(key); `key` itself to overwrite it), else into a new array."""
        dest = np.empty(len(key), dtype=np.int64) if out is None else out
        source: npt.NDArray[Any] = key
        shift = self.shift(index)
        if shift:
            np.right_shift(key, np.uint64(shift), out=dest, dtype=np.uint64, casting="unsafe")
            source = dest
        mask = np.uint64((1 << self.widths[index]) - 1)
        np.bitwise_and(source, mask, out=dest, dtype=np.uint64, casting="unsafe")
        result: I64 = dest.view(np.int64)
        return result
