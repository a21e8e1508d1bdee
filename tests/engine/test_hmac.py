"""Keyed pseudonyms: the engines' SQL HMAC equals Python's `hmac` byte for byte."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.engine import connect
from consentry.engine.hmac import hmac_hex, hmac_sql

# RFC 4231 §4.3 (test case 2) and §4.7 (test case 6: a 131-byte key, longer than a block).
RFC4231 = [
    (
        b"Jefe",
        "what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ),
    (
        b"\xaa" * 131,
        "Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
    ),
]

# Any Unicode text but lone surrogates (not encodable as UTF-8, so not a possible id).
TEXTS = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
KEYS = st.binary(min_size=1, max_size=140)  # short, block-sized and longer-than-block keys


@pytest.fixture(scope="module")
def duck() -> Any:
    return connect("duckdb").con


def duckdb_hmacs(con: Any, key: bytes, messages: list[str]) -> list[str]:
    con.register("hmac_input", pa.table({"m": pa.array(messages, pa.string())}))
    try:
        rows = con.sql(f"SELECT {hmac_sql('m', key, 'duckdb')} AS h FROM hmac_input").fetchall()
    finally:
        con.unregister("hmac_input")
    return [r[0] for r in rows]


@pytest.mark.parametrize(("key", "message", "expected"), RFC4231)
def test_reference_matches_rfc_4231(key: bytes, message: str, expected: str) -> None:
    assert hmac_hex(key, message) == expected


@pytest.mark.parametrize(("key", "message", "expected"), RFC4231)
def test_duckdb_matches_rfc_4231(duck: Any, key: bytes, message: str, expected: str) -> None:
    assert duckdb_hmacs(duck, key, [message]) == [expected]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=KEYS, messages=st.lists(TEXTS, min_size=1, max_size=30))
def test_duckdb_hmac_equals_python_hmac(duck: Any, key: bytes, messages: list[str]) -> None:
    assert duckdb_hmacs(duck, key, messages) == [hmac_hex(key, m) for m in messages]


@pytest.mark.parametrize("size", [63, 64, 65])
def test_keys_at_the_block_size(duck: Any, size: int) -> None:
    """RFC 2104: a key longer than the 64-byte block is hashed first; one of 64 is not."""
    key = bytes(range(1, size + 1))
    messages = ["", "post-1", "ünïcödé"]
    assert duckdb_hmacs(duck, key, messages) == [hmac_hex(key, m) for m in messages]


def test_hmac_hex_is_the_standard_construction() -> None:
    key, message = b"k" * 32, "post-1234 ✓ ünïcode 🙂"
    expected = hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()
    assert hmac_hex(key, message) == expected
    assert len(expected) == 64
    assert hmac_hex(b"other" * 7, message) != expected


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="no HMAC expression"):
        hmac_sql("post_id", b"k", "sqlite")


@pytest.mark.spark
def test_spark_hmac_equals_python_hmac(spark_session: Any) -> None:
    keys = [b"Jefe", b"\x00" * 32, bytes(range(64)), b"\xaa" * 131]
    messages = [
        "",
        "1484288900959567897",
        "ünïcödé ✓",
        "日本語のテキスト",
        "🙂\x00tab\t",
        "a" * 300,
    ]
    frame = spark_session.createDataFrame(list(enumerate(messages)), "i INT, m STRING")
    frame.createOrReplaceTempView("hmac_cases")
    # One query, one column per key: a single Spark job.
    columns = ", ".join(f"{hmac_sql('m', key, 'pyspark')} AS k{j}" for j, key in enumerate(keys))
    rows = spark_session.sql(f"SELECT i, {columns} FROM hmac_cases ORDER BY i").collect()
    assert [row["i"] for row in rows] == list(range(len(messages)))
    for row in rows:
        for j, key in enumerate(keys):
            assert row[f"k{j}"] == hmac_hex(key, messages[row["i"]]), (key, messages[row["i"]])
