"""The bytes behind an Arrow string or binary array, as NumPy: one reader for every place
that hashes, scans or sends those bytes without a Python object per value."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["binary_parts", "fixed_rows", "fixed_width"]


def binary_parts(values: pa.Array | pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], memoryview]:
    """(offsets, data) of a string or binary array without nulls.

    1. Chunks are combined; the array is viewed as large binary (64-bit offsets).
    2. `data` is the values' bytes back to back, without copying them (hashlib and sockets
       take it as is, `np.frombuffer` views it); value i is `data[offsets[i]:offsets[i + 1]]`
       (offsets start at 0, slices of arrays included).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    arr = values.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    buffer = arr.buffers()[2]
    data = memoryview(buffer if buffer is not None else b"")
    return offsets - offsets[0], data[int(offsets[0]) : int(offsets[-1])]


def fixed_width(values: pa.Array | pa.ChunkedArray) -> npt.NDArray[np.void] | None:
    """The values as NumPy `V<width>` items (zero copy) when every value has the same
    non-zero byte length, else None.

    NumPy takes fixed-width items with one typed copy each, where Arrow's take of a
    variable-width array calls `memcpy` per value: several times faster for short ids.
    """
    offsets, data = binary_parts(values)
    if len(offsets) < 2:
        return None
    width = int(offsets[1])
    if width == 0 or int(offsets[-1]) != width * (len(offsets) - 1):
        return None
    if not bool((np.diff(offsets) == width).all()):
        return None
    return np.frombuffer(data, dtype=f"V{width}")


def fixed_rows(items: npt.NDArray[np.void]) -> pa.Array:
    """A binary array over fixed-width `V<width>` items, without copying the bytes; 64-bit
    offsets when 32 bits cannot address them."""
    n, width = len(items), items.dtype.itemsize
    data = np.ascontiguousarray(items).view(np.uint8)
    large = width * n >= 2**31
    offsets = np.arange(0, width * (n + 1), width, dtype=np.int64 if large else np.int32)
    kind = pa.large_binary() if large else pa.binary()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
