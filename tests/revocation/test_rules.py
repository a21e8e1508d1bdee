"""Property tests of the pure revocation rules: cursors, states, deadlines, receipts, and the
two encodings of a record's deliveries."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.errors import BadInput
from consentry.policy import load_policy
from consentry.revocation import (
    MAX_RECEIPT_IDS,
    Cursor,
    RevocationStatus,
    decode_cursor,
    due_at,
    encode_cursor,
    lines_digest,
    lines_digest_arrow,
    parse_receipt_ids,
    status_of,
)
from consentry.revocation.job import DENIAL_STARTS, _ranks_of
from consentry.revocation.rules import denial_started
from consentry.settings import Settings

KEY = b"k" * 32
licensee_ids = st.text("0123456789abcdef", min_size=16, max_size=16)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
record_ids = st.text("0123456789abcdef", min_size=64, max_size=64)


@given(licensee_ids, st.integers(min_value=0, max_value=2**62))
def test_a_cursor_reads_back_as_issued(licensee: str, seq: int) -> None:
    token = encode_cursor(Cursor(licensee, seq), KEY)
    assert decode_cursor(token, KEY, licensee) == Cursor(licensee, seq)


@given(licensee_ids, licensee_ids, st.integers(min_value=0, max_value=10**9))
def test_a_cursor_does_not_open_another_licensees_feed(mine: str, other: str, seq: int) -> None:
    token = encode_cursor(Cursor(mine, seq), KEY)
    if mine != other:
        with pytest.raises(BadInput, match="another licensee"):
            decode_cursor(token, KEY, other)
    with pytest.raises(BadInput, match="not a cursor issued"):
        decode_cursor(token, b"x" * 32, mine)


@given(licensee_ids, st.integers(min_value=0, max_value=10**9), st.data())
def test_any_altered_byte_is_refused(licensee: str, seq: int, data: st.DataObject) -> None:
    token = encode_cursor(Cursor(licensee, seq), KEY)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    altered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(BadInput):
        decode_cursor(altered, KEY, licensee)


def test_an_empty_cursor_is_the_start() -> None:
    assert decode_cursor("", KEY, "a" * 16) == Cursor("a" * 16, 0)


@given(instants, instants, st.one_of(st.none(), instants))
def test_status_is_confirmed_overdue_or_pending(
    due: datetime, now: datetime, confirmed: datetime | None
) -> None:
    status = status_of(confirmed, due, now)
    if confirmed is not None:
        assert status is RevocationStatus.CONFIRMED
    elif now > due:
        assert status is RevocationStatus.OVERDUE
    else:
        assert status is RevocationStatus.PENDING


@given(instants)
def test_the_default_policy_gives_thirty_days(at: datetime) -> None:
    policy = load_policy(Settings().policy_file)
    if policy.version_at(at) is not None:
        assert due_at(policy, at) == at + timedelta(days=30)


@given(st.lists(record_ids, min_size=1, max_size=50))
def test_valid_receipts_are_deduplicated_in_order(ids: list[str]) -> None:
    assert parse_receipt_ids(ids) == list(dict.fromkeys(ids))


@given(
    st.lists(record_ids, max_size=10),
    st.one_of(
        st.text(max_size=70).filter(
            lambda t: not (len(t) == 64 and set(t) <= set("0123456789abcdef"))
        ),
        st.integers(),
        st.none(),
    ),
    st.data(),
)
def test_one_bad_id_refuses_the_whole_batch(
    ids: list[str], bad: object, data: st.DataObject
) -> None:
    position = data.draw(st.integers(0, len(ids)))
    batch: list[object] = [*ids[:position], bad, *ids[position:]]
    with pytest.raises(BadInput) as caught:
        parse_receipt_ids(batch)
    assert f"record_ids[{position}]" in str(caught.value)


def test_empty_and_oversized_batches_are_refused() -> None:
    with pytest.raises(BadInput, match="non-empty"):
        parse_receipt_ids([])
    with pytest.raises(BadInput, match="at most"):
        parse_receipt_ids(["0" * 64] * (MAX_RECEIPT_IDS + 1))


@settings(max_examples=200)
@given(st.lists(st.sets(st.integers(0, 63), min_size=1), min_size=0, max_size=40))
def test_delivery_masks_and_rank_lists_agree(rows: list[set[int]]) -> None:
    masks = pa.chunked_array([pa.array([sum(1 << r for r in row) for row in rows], pa.uint64())])
    lists = pa.chunked_array([pa.array([sorted(row) for row in rows], pa.list_(pa.int32()))])
    from_masks = _ranks_of(masks, True, 64)
    from_lists = _ranks_of(lists, False, 64)
    assert np.array_equal(from_masks[0], from_lists[0])
    assert np.array_equal(from_masks[1], from_lists[1])
    assert from_masks[1].tolist() == [r for row in rows for r in sorted(row)]


@given(st.lists(st.text(max_size=12), max_size=300), st.integers(min_value=1, max_value=4))
def test_the_arrow_digest_equals_the_python_one(lines: list[str], pieces: int) -> None:
    # Any text (astral code points, surrogate-free) in any chunking: Arrow's byte order of
    # UTF-8 is Python's code point order, so both digests agree.
    size = max(1, len(lines) // pieces)
    chunked = pa.chunked_array(
        [pa.array(lines[i : i + size], pa.string()) for i in range(0, len(lines), size)]
        or [pa.array([], pa.string())]
    )
    expected = lines_digest(lines)
    assert lines_digest_arrow(chunked) == expected
    assert lines_digest_arrow(pa.array(lines, pa.string())) == expected


_T0 = datetime(2025, 1, 1, tzinfo=UTC)
_EVENT = st.tuples(
    st.sampled_from(["u1", "u2", "u3"]),
    st.integers(min_value=0, max_value=6),  # few instants: ties and edges are common
    st.sampled_from(["allow", "deny"]),
    st.sampled_from(["ai_training_third_party", "other"]),
)


@settings(max_examples=150, deadline=None)
@given(events=st.lists(_EVENT, max_size=12), as_of=st.integers(min_value=0, max_value=6))
@example(events=[("u1", 2, "deny", "ai_training_third_party")], as_of=2)  # at the as-of instant
@example(
    events=[
        ("u1", 1, "allow", "ai_training_third_party"),
        ("u1", 1, "deny", "ai_training_third_party"),
    ],
    as_of=3,
)  # a deny at the instant of the last allow does not start a run
@example(
    events=[
        ("u1", 1, "deny", "ai_training_third_party"),
        ("u1", 2, "allow", "ai_training_third_party"),
        ("u1", 3, "deny", "ai_training_third_party"),
        ("u1", 4, "deny", "ai_training_third_party"),
    ],
    as_of=5,
)  # the run starts after the last allow, at its first deny
def test_denial_starts_sql_is_the_rule(events: list[tuple[str, int, str, str]], as_of: int) -> None:
    """The revocation job's SQL kernel (`DENIAL_STARTS`) gives every author the instant
    `denial_started` gives them, on DuckDB."""
    import duckdb

    at = _T0 + timedelta(hours=as_of)
    table = pa.table(
        {
            "user_id": pa.array([e[0] for e in events], pa.string()),
            "purpose": pa.array([e[3] for e in events], pa.string()),
            "choice": pa.array([e[2] for e in events], pa.string()),
            "at": pa.array(
                [_T0 + timedelta(hours=e[1]) for e in events], pa.timestamp("us", "UTC")
            ),
        }
    )
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("ledger_events", table)
    sql = DENIAL_STARTS.format(
        events="ledger_events", purpose="'ai_training_third_party'", at=f"'{at.isoformat()}'"
    )
    got = dict(con.execute(sql).fetchall())
    want: dict[str, datetime] = {}
    for user in {e[0] for e in events}:
        mine = [
            (_T0 + timedelta(hours=h), choice)
            for u, h, choice, purpose in events
            if u == user and purpose == "ai_training_third_party"
        ]
        start = denial_started(mine, at)
        if start is not None:
            want[user] = start
    assert got == want
