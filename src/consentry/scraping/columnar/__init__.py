"""The columnar DuckDB path of the assessment (method `numpy` on DuckDB, the default).

Same results as the Ibis path and `reference.py` (the cross-checks run both), built for
volume: nothing per access leaves the engine but three numbers, and no string goes through
a sort.

1. **Attribution per distinct credential.** One aggregate gives every distinct credential
   with its first and last access. Each is resolved once (`owner_candidates`): a credential
   whose owner is the same over its whole span (no candidate, or the winning candidate does
   not change between its first and last access) maps to one dense entity code; the others
   ("dynamic": rotated keys, ranges with a validity edge inside the span) get piecewise
   segments `[from, to) -> entity`, resolved per access with one binary search over a
   composite (credential, instant) key. Entity codes are ranks of the sorted entity names,
   so code order is output order.
2. **Duplicates.** One scan hashes every request_id (64-bit `hash`); a sort of the hashes
   finds the repeated ones. Only request ids whose hash repeats are ranked exactly (first by
   ts, credential, posts, as the rule says; a hash collision of two different ids keeps
   both, since the ranking groups by the id itself); every other access is unique for
   certain. Without repeats nothing else happens.
3. **Exact pass.** DuckDB streams (credential code, instant, posts) joined to the small
   credential table; NumPy packs (entity's low bits, instant - t0, posts) into one uint64
   per access, one array per chunk of entity codes (their high bits), and sorts each (SIMD
   sort, two chunks at a time in threads); `lexsort` only when instant and posts leave
   fewer than 8 bits. Per chunk of entities of about 4M rows (two threads; composite keys
   stay in int64): prefix sums, window ends by one merge (keys and `key + window` tagged
   in the low bit are two sorted runs that a stable sort merges in one pass: a key's end
   is its position among the merged values minus its rank), per-entity totals and maxima
   with `reduceat`.
4. **Billing.** Mode `earliest` runs vectorised over all over-line entities at once (one
   binary search per round, one round per billed window of the busiest entity); mode
   `max_total` runs the pure rule per over-line entity.
5. **Evidence.** One more scan joins the accesses of billed entities to their window in
   the engine (entity and `start <= ts < end`) and returns window, offset, request_id,
   credential index and posts. Windows form groups of consecutive windows (at most 4M
   accesses, and few enough windows and rows that (window, offset, row) pack into one
   uint64); one sort of packed (group, row) keys partitions the rows, and per group (two
   threads) one sort of packed (window, offset, row) keys gives the canonical order, ties
   by request_id. NumPy's argsort is far slower than its SIMD sort of the same uint64 keys
   (figures in docs/benchmarks.md, "Sorting packed keys"), hence the packing. Lines are
   formatted by table lookups and one Arrow join of six columns (fixed-width request ids
   and the instant's tables taken by NumPy as fixed-width items: Arrow's variable-width
   take copies value by value), and each window's contiguous slice of the line buffer is
   hashed (`canonical.py`).

The steps live in `credentials` (1), `session` (the DuckDB session and fetches, 2),
`exact` (3, 4) and `evidence` (5); `assess` runs them; `tuning` holds their sizes.
"""

from consentry.scraping.columnar.assess import assess_columnar
from consentry.scraping.columnar.credentials import (
    CredentialMap,
    pair_search,
    resolve_credentials,
)
from consentry.scraping.columnar.exact import (
    earliest_all,
    exact_pass,
    forward_ends,
    sort_accesses,
)

__all__ = [
    "CredentialMap",
    "assess_columnar",
    "earliest_all",
    "exact_pass",
    "forward_ends",
    "pair_search",
    "resolve_credentials",
    "sort_accesses",
]
