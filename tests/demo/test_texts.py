"""Vectorised string builders: ids, digits, card numbers, per-kind assembly, post texts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from consentry.demo.texts import (
    LANGS,
    PII_KINDS,
    by_kind,
    digit_strings,
    hex_strings,
    ipv4_strings,
    luhn_card_numbers,
    post_texts,
)
from tests.demo.test_generator import _luhn


def test_card_numbers_pass_luhn_and_look_like_cards() -> None:
    cards = luhn_card_numbers(np.random.default_rng(1), 2_000).to_pylist()
    digits = [c.replace(" ", "") for c in cards]
    assert all(len(d) == 16 and d.isdigit() for d in digits)
    assert all(_luhn(d) for d in digits)
    assert all(d[0] in "45" for d in digits)
    assert any(" " in c for c in cards)
    assert any(" " not in c for c in cards)
    # Breaking one digit breaks the checksum.
    assert not any(_luhn(d[:-1] + str((int(d[-1]) + 1) % 10)) for d in digits)


def test_hex_digit_and_ip_strings() -> None:
    values = np.array([0, 1, 255, 2**64 - 1], dtype=np.uint64)
    assert hex_strings(values).to_pylist() == [f"{int(v):016x}" for v in values]
    assert hex_strings(values, 4).to_pylist() == [f"{int(v) & 0xFFFF:04x}" for v in values]
    digits = digit_strings(np.random.default_rng(2), 500, 7).to_pylist()
    assert all(len(d) == 7 and d.isdigit() for d in digits)
    octets = np.array([[8, 8, 4, 4], [203, 0, 113, 255]], dtype=np.int64)
    assert ipv4_strings(octets).to_pylist() == ["8.8.4.4", "203.0.113.255"]


@given(st.lists(st.integers(0, 3), max_size=200))
def test_by_kind_gives_each_row_the_next_value_of_its_kind(kinds: list[int]) -> None:
    kind = np.array(kinds, dtype=np.int64)
    parts = [
        pa.array([f"{k}:{i}" for i in range(int((kind == k).sum()))], type=pa.string())
        for k in range(4)
    ]
    out = by_kind(kind, parts).to_pylist()
    seen = [0, 0, 0, 0]
    expected = []
    for k in kinds:
        expected.append(f"{k}:{seen[k]}")
        seen[k] += 1
    assert out == expected


def test_post_texts_follow_their_language_and_kind() -> None:
    rng = np.random.default_rng(3)
    langs = rng.integers(0, len(LANGS), 20_000).astype(np.int64)
    texts, kind = post_texts(rng, langs)
    assert len(texts) == len(langs) == len(kind)
    assert set(np.unique(kind)) == set(range(len(PII_KINDS)))
    rows = texts.to_pylist()
    email = PII_KINDS.index("email")
    assert all("@" in rows[i] for i in np.flatnonzero(kind == email)[:200])
    japanese = np.flatnonzero(langs == LANGS.index("ja"))[:200]
    assert all(any("\u3040" <= ch <= "\u9fff" for ch in rows[i]) for i in japanese)
    assert all(t and t == t.strip() for t in rows)
