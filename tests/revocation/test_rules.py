"""Property tests of the pure revocation rules: cursors, states, deadlines, receipts, and the
two encodings of a record's deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.errors import BadInput
from consentry.policy import load_policy, parse_policy
from consentry.policy.model import DEFAULT_REVOCATION_SLA
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
@example("0" * 16, 0)
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


def _signed(body: object, key: bytes = KEY) -> str:
    """A token with a valid tag over any JSON body (the scheme of docs/revocations.md)."""
    raw = json.dumps(body, separators=(",", ":")).encode()
    tag = hmac.new(key, b"consentry revocation cursor v1:" + raw, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(raw + tag).decode().rstrip("=")


def test_a_cursor_token_is_the_documented_body_and_tag() -> None:
    licensee = "0123456789abcdef"
    token = encode_cursor(Cursor(licensee, 7), KEY)
    assert token == _signed({"v": 1, "l": licensee, "s": 7})


@pytest.mark.parametrize(
    "body",
    [
        [1, "0123456789abcdef", 3],
        {"v": 2, "l": "0123456789abcdef", "s": 3},
        {"l": "0123456789abcdef", "s": 3},
        {"v": 1, "l": 5, "s": 3},
        {"v": 1, "s": 3},
        {"v": 1, "l": "0123456789abcdef", "s": "3"},
        {"v": 1, "l": "0123456789abcdef"},
        {"v": 1, "l": "0123456789abcdef", "s": True},
        {"v": 1, "l": "0123456789abcdef", "s": -1},
    ],
)
def test_a_signed_body_of_another_shape_is_not_a_cursor_of_this_feed(body: object) -> None:
    with pytest.raises(BadInput, match="not a cursor of this feed version"):
        decode_cursor(_signed(body), KEY, "0123456789abcdef")


def test_a_signed_body_that_is_not_json_is_refused() -> None:
    raw = b"not json"
    tag = hmac.new(KEY, b"consentry revocation cursor v1:" + raw, hashlib.sha256).digest()[:16]
    token = base64.urlsafe_b64encode(raw + tag).decode().rstrip("=")
    with pytest.raises(BadInput, match="body is not JSON"):
        decode_cursor(token, KEY, "0123456789abcdef")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("A" * 512, "not a cursor issued by this server"),
        ("A" * 513, "use the next_cursor"),
        ("abc!", "use the next_cursor"),
        ("ab+c", "use the next_cursor"),
        ("A", "not base64url"),
        ("A" * 20, "not a cursor issued by this server"),
        (base64.urlsafe_b64encode(b"x" * 16).decode().rstrip("="), "issued by this server"),
    ],
)
def test_a_malformed_cursor_names_the_check_it_failed(token: str, message: str) -> None:
    """At most 512 base64url characters; then base64url; then a body and a valid tag."""
    with pytest.raises(BadInput, match=message):
        decode_cursor(token, KEY, "0123456789abcdef")


def test_a_tag_alone_with_an_empty_body_is_refused() -> None:
    tag = hmac.new(KEY, b"consentry revocation cursor v1:", hashlib.sha256).digest()[:16]
    token = base64.urlsafe_b64encode(tag).decode().rstrip("=")
    with pytest.raises(BadInput, match="issued by this server"):
        decode_cursor(token, KEY, "0123456789abcdef")


def test_a_revocation_is_overdue_only_after_its_deadline() -> None:
    due = datetime(2025, 1, 31, tzinfo=UTC)
    tick = timedelta(microseconds=1)
    assert status_of(None, due, due - tick) is RevocationStatus.PENDING
    assert status_of(None, due, due) is RevocationStatus.PENDING
    assert status_of(None, due, due + tick) is RevocationStatus.OVERDUE
    assert status_of(due + tick, due, due + tick) is RevocationStatus.CONFIRMED


def test_before_any_policy_version_the_default_sla_applies() -> None:
    policy = load_policy(Settings().policy_file)
    first = min(v.effective_from for v in policy.versions)
    at = first - timedelta(days=400)
    assert policy.version_at(at) is None
    assert DEFAULT_REVOCATION_SLA.days == 30
    assert due_at(policy, at) == at + timedelta(days=30)
    # An offset instant is read in UTC.
    local = at.astimezone(timezone(timedelta(hours=5)))
    assert due_at(policy, local) == at + timedelta(days=30)
    assert due_at(policy, local).tzinfo is UTC


def test_a_batch_of_exactly_the_maximum_is_accepted() -> None:
    ids = [f"{i:064x}" for i in range(MAX_RECEIPT_IDS)]
    assert parse_receipt_ids(ids) == ids


def test_a_refusal_names_at_most_twenty_positions() -> None:
    batch: list[object] = [None] * 25
    with pytest.raises(BadInput) as caught:
        parse_receipt_ids(batch)
    assert "record_ids[19]" in str(caught.value)
    assert "record_ids[20]" not in str(caught.value)


def test_the_lines_digest_is_sha256_of_the_sorted_lines() -> None:
    expected = hashlib.sha256(b"a\nb\nc").hexdigest()
    assert lines_digest(["c", "a", "b"]) == expected
    assert lines_digest_arrow(pa.array(["c", "a", "b"])) == expected
    assert lines_digest_arrow(pa.array([], pa.string())) == hashlib.sha256(b"").hexdigest()


def test_a_cursor_ending_in_any_base64url_character_reads_back() -> None:
    """Only the `=` padding is stripped from a token, never a character of its alphabet."""
    licensee = "0123456789abcdef"
    last: dict[str, tuple[int, str]] = {}
    for seq in range(400):
        token = encode_cursor(Cursor(licensee, seq), KEY)
        last.setdefault(token[-1], (seq, token))
    assert len(last) > 40
    for seq, token in last.values():
        assert decode_cursor(token, KEY, licensee) == Cursor(licensee, seq)


def test_a_refused_cursor_names_the_query_parameter() -> None:
    with pytest.raises(BadInput) as caught:
        decode_cursor("abc!", KEY, "0123456789abcdef")
    (problem,) = caught.value.problems
    assert (problem.location, problem.row, problem.field) == ("query", None, "cursor")


def test_a_refused_receipt_names_the_request_body_and_what_a_record_id_is() -> None:
    with pytest.raises(BadInput) as caught:
        parse_receipt_ids(["nope"])
    (problem,) = caught.value.problems
    assert (problem.location, problem.field) == ("request body", "record_ids[0]")
    assert (
        problem.message == "not a record id (64 lower-case hex digits, as in the delivered files)"
    )
    with pytest.raises(BadInput) as where:
        parse_receipt_ids(["nope"], location="receipts.json")
    assert where.value.problems[0].location == "receipts.json"


def test_the_sla_is_the_one_of_the_version_in_force_at_the_revocation() -> None:
    policy = parse_policy(
        """\
versions:
  - version: v1
    effective_from: 2024-01-01T00:00:00Z
    revocation_sla: 7 days
    purposes:
      - key: p
        title: P
        description: A purpose.
        default: allow
        minors: deny
        unknown_age: allow
        gpc: true
  - version: v2
    effective_from: 2025-01-01T00:00:00Z
    revocation_sla: 45 days
    purposes:
      - key: p
        title: P
        description: A purpose.
        default: allow
        minors: deny
        unknown_age: allow
        gpc: true
""",
        source="sla.yaml",
    )
    before = datetime(2023, 6, 1, tzinfo=UTC)
    first = datetime(2024, 12, 31, 23, tzinfo=UTC)
    second = datetime(2025, 1, 1, tzinfo=UTC)
    assert due_at(policy, before) == before + timedelta(days=30)
    assert due_at(policy, first) == first + timedelta(days=7)
    assert due_at(policy, second) == second + timedelta(days=45)
    # 2024-12-31 23:00 at UTC-2 is already 2025-01-01 01:00 UTC: the second version's SLA.
    local = datetime(2024, 12, 31, 23, tzinfo=timezone(timedelta(hours=-2)))
    assert due_at(policy, local) == local + timedelta(days=45)
