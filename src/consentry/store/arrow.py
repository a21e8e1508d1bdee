"""Control-plane rows as Arrow tables, for the vectorised engines."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from sqlalchemy.orm import Session

__all__ = ["select_arrow"]

_BATCH = 50_000
"""Rows fetched per round trip."""


def select_arrow(session: Session, query: Any, schema: pa.Schema) -> pa.Table:
    """Run `query` (a SELECT whose columns are `schema`'s, in order) and return its rows as
    an Arrow table with exactly `schema`, built one batch of `_BATCH` rows at a time."""
    batches = [
        pa.record_batch(
            [
                pa.array(list(values), type=f.type)
                for values, f in zip(zip(*part, strict=True), schema, strict=True)
            ],
            schema=schema,
        )
        for part in session.execute(query.execution_options(yield_per=_BATCH)).partitions()
        if part
    ]
    return pa.Table.from_batches(batches, schema=schema)
