"""The anchor digests: the DuckDB kernel against the Python reference, sums that order cannot
change and that a changed field always changes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.ledger.anchor import (
    ANCHOR_FIELDS,
    ANCHOR_SCHEMA,
    DIGEST_MODULUS,
    add_digests,
    anchor_key,
    digest_sums_by,
    event_digest,
    subtract_digests,
)

KEY = anchor_key(b"k" * 32)
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=12)
_INSTANT = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
)


@st.composite
def _event(draw: st.DrawFn) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name in ANCHOR_FIELDS:
        if name in ("at", "recorded_at"):
            event[name] = draw(_INSTANT)
        elif name in ("event_id", "user_id", "purpose", "choice", "source"):
            event[name] = draw(_TEXT.filter(bool))
        else:
            event[name] = draw(st.none() | _TEXT)
    return event


def _table(events: list[dict[str, Any]], anchors: list[int] | None = None) -> pa.Table:
    table = pa.Table.from_pylist(events, schema=ANCHOR_SCHEMA)
    if anchors is not None:
        table = table.append_column("anchor_seq", pa.array(anchors, pa.int64()))
    return table


SAMPLE: dict[str, Any] = {
    "event_id": "e1",
    "user_id": "u\u00e9",
    "purpose": "p",
    "choice": "deny",
    "at": datetime(1900, 1, 1, tzinfo=UTC),
    "source": "api",
    "policy_version": None,
    "evidence_origin": "",
    "evidence_client": None,
    "evidence_shown_version": "v\x1fx",
    "recorded_at": datetime(2199, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
}


@settings(max_examples=60, deadline=None)
@given(events=st.lists(_event(), max_size=12), groups=st.integers(min_value=1, max_value=3))
@example(events=[SAMPLE], groups=1)
@example(events=[], groups=1)
def test_the_sql_kernel_matches_the_reference(events: list[dict[str, Any]], groups: int) -> None:
    anchors = [i % groups for i in range(len(events))]
    sums = digest_sums_by(KEY, _table(events, anchors), "anchor_seq")
    expected: dict[int | None, int] = {}
    for event, anchor in zip(events, anchors, strict=True):
        expected[anchor] = add_digests([expected.get(anchor, 0), event_digest(KEY, event)])
    assert sums == expected
    overall = digest_sums_by(KEY, _table(events), None)
    assert overall == ({None: add_digests(expected.values())} if events else {})


@settings(max_examples=60, deadline=None)
@given(event=_event(), field=st.sampled_from(ANCHOR_FIELDS), data=st.data())
@example(event=SAMPLE, field="policy_version", data=None)
@example(event=SAMPLE, field="evidence_origin", data=None)
def test_changing_any_field_changes_the_digest(
    event: dict[str, Any], field: str, data: st.DataObject | None
) -> None:
    changed: dict[str, Any] = dict(event)
    if isinstance(event[field], datetime):
        changed[field] = event[field] + timedelta(microseconds=1)
    elif event[field] is None:
        changed[field] = "x"
    else:
        changed[field] = event[field] + "x"
    assert event_digest(KEY, changed) != event_digest(KEY, event)
    if event[field] is None:
        assert event_digest(KEY, {**event, field: ""}) != event_digest(KEY, event)


@example(left="a\x1fb", right="c")
@given(left=_TEXT, right=_TEXT)
def test_text_moved_between_fields_changes_the_digest(left: str, right: str) -> None:
    for cut in range(len(left) + 1):
        moved = {**SAMPLE, "evidence_origin": left[:cut], "evidence_client": left[cut:] + right}
        if moved["evidence_origin"] != left:
            original = {**SAMPLE, "evidence_origin": left, "evidence_client": right}
            assert event_digest(KEY, moved) != event_digest(KEY, original)


def test_sums_are_order_free_and_subtract_back() -> None:
    digests = [event_digest(KEY, SAMPLE | {"event_id": f"e{i}"}) for i in range(5)]
    total = add_digests(digests)
    assert total == add_digests(reversed(digests))
    assert subtract_digests(total, digests[2]) == add_digests(digests[:2] + digests[3:])
    assert 0 <= total < DIGEST_MODULUS
    assert anchor_key(b"k" * 32) != anchor_key(b"j" * 32)
