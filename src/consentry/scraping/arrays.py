"""Array idioms the scraping kernels share: growing buffers and concatenated index ranges."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["concat_ranges", "with_room"]

I64 = npt.NDArray[np.int64]

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
