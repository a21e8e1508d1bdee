"""Sizes the columnar path works in (tests shrink them to reach every branch)."""

from __future__ import annotations

CHUNK_ROWS = 1 << 22
"""Rows per chunk of the exact pass (bounds the temporaries; entities never straddle)."""
EVIDENCE_ROWS = 4_000_000
"""Accesses per evidence group (consecutive windows), to bound the sort and line buffer."""
PACK_BITS = 64
MIN_CHUNK_BITS = 8
"""Bits of a packed key, and the fewest of them left for entity codes (else lexsort)."""
