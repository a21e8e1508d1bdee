"""Post -> author, answered from memory for the latest version of the lake's `posts`.

The public signals endpoint answers per post (`/v1/public/signals/posts/{post_id}`) at the
rate a platform's pages are served, so the author of a post must be found in microseconds,
not by a query over Parquet (a DuckDB point query over the snapshot costs milliseconds).
A post's author never changes, so a map built from one version stays right for every post
that version holds; a new version (an import, a retention purge) is picked up when the
table's latest version number moves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.engine.lake import Lake

__all__ = ["PostAuthorIndex", "PostAuthors"]

POSTS = "posts"
_END = b"\x01"
"""Ends every id in the index (see `PostAuthorIndex`)."""


@dataclass(frozen=True, slots=True)
class PostAuthorIndex:
    """One version's post -> author map, compact: post ids as sorted UTF-8 bytes, each
    with the number of its author in `authors` (about 5 bytes per post more than the ids).

    Each id is stored with `_END` after it: numpy's fixed-width bytes drop trailing NULs,
    so without it `a` and `a\x00` would be one id."""

    version: int | None
    post_ids: npt.NDArray[np.bytes_]
    author_codes: npt.NDArray[np.int32]
    authors: tuple[str, ...]

    @classmethod
    def empty(cls) -> PostAuthorIndex:
        return cls(None, np.array([], dtype="S1"), np.array([], dtype=np.int32), ())

    @classmethod
    def build(cls, version: int | None, table: pa.Table | None) -> PostAuthorIndex:
        """Index the `post_id` and `author_id` columns of `table` (one version's posts).

        1. Authors are dictionary-encoded: each post keeps the number of its author.
        2. Post ids are sorted (as UTF-8 bytes), so a lookup is a binary search.
        """
        if table is None or table.num_rows == 0:
            return cls(version, np.array([], dtype="S1"), np.array([], dtype=np.int32), ())
        end = pa.scalar(_END, pa.binary())
        post_ids = pc.binary_join_element_wise(
            table.column("post_id").combine_chunks().cast(pa.binary()), end, b""
        )
        encoded = table.column("author_id").combine_chunks().dictionary_encode()
        order = pc.sort_indices(post_ids)
        ids = np.array(post_ids.take(order).to_pylist(), dtype=np.bytes_)
        codes = encoded.indices.take(order).to_numpy(zero_copy_only=False).astype(np.int32)
        return cls(version, ids, codes, tuple(encoded.dictionary.to_pylist()))

    def author_of(self, post_id: str) -> str | None:
        """The author of `post_id`, or None when this version has no such post."""
        if not len(self.post_ids):
            return None
        key = post_id.encode("utf-8") + _END
        i = int(np.searchsorted(self.post_ids, key))
        if i < len(self.post_ids) and self.post_ids[i] == key:
            return self.authors[int(self.author_codes[i])]
        return None

    def post_id(self, i: int) -> str:
        """The `i`-th post id in the index's order."""
        return bytes(self.post_ids[i][: -len(_END)]).decode("utf-8")

    def __len__(self) -> int:
        return len(self.post_ids)


class PostAuthors:
    """`author_of(post_id)` for the latest version of the lake's `posts`, rebuilt when it
    changes.

    1. The latest version is looked up (the Delta log read) at most once every
       `recheck_seconds`; a lookup in between uses the index it has.
    2. When the version differs from the indexed one, the index is rebuilt from the new
       version's parts (one thread builds; the others keep the old index meanwhile).
    3. A post the index does not hold (not imported yet, purged, never existed) has no
       author: None.
    """

    def __init__(self, lake: Lake, *, recheck_seconds: float = 1.0) -> None:
        self.lake = lake
        self.recheck_seconds = recheck_seconds
        self._index = PostAuthorIndex.empty()
        self._checked = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> PostAuthorIndex | None:
        """The index when it is that of the latest version (as of at most `recheck_seconds`
        ago), without building one; None when it must be (re)built first (`index`).

        Cheap enough for an event loop: when due, it reads the table's latest version
        number (the Delta log, a few small local files) and, if it has not moved, counts
        the check as done, so only a rebuild — seconds for millions of posts — is left to a
        thread.
        """
        if time.monotonic() - self._checked < self.recheck_seconds:
            return self._index
        index = self._index
        if self.lake.version(POSTS) != index.version:
            return None
        # No lock (a thread may hold it for a rebuild): the index was that of the latest
        # version when the log was read, and a thread that swaps in a newer one sets the
        # time of its own check.
        self._checked = time.monotonic()
        return index

    def index(self) -> PostAuthorIndex:
        """The index of the latest version (as of at most `recheck_seconds` ago)."""
        now = time.monotonic()
        if now - self._checked < self.recheck_seconds:
            return self._index
        with self._lock:
            if now - self._checked < self.recheck_seconds:
                return self._index
            version = self.lake.version(POSTS)
            if version != self._index.version:
                try:
                    parts = self.lake.files(POSTS, version=version) if version is not None else []
                    columns = ["post_id", "author_id"]
                    table = self.lake.read_files(parts, columns, table=POSTS) if parts else None
                    self._index = PostAuthorIndex.build(version, table)
                except FileNotFoundError:
                    # A vacuum removed this version's files while they were read: keep the
                    # old index and look again on the next lookup.
                    return self._index
            self._checked = time.monotonic()
            return self._index

    def author_of(self, post_id: str) -> str | None:
        """The author of `post_id` in the latest version; None when it holds no such post."""
        return self.index().author_of(post_id)
