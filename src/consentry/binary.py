"""The bytes behind an Arrow string or binary array, as NumPy: one reader for every place
that hashes, scans or sends those bytes without a Python object per value."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

__all__ = ["binary_parts"]


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
