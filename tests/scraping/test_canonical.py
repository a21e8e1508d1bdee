"""The canonical form of evidence (docs/scraping.md): fixed lines written out by hand, so
every escape is checked against the documented bytes, not only one implementation against
the other (tests/scraping/test_columnar.py holds the two implementations together)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from consentry.scraping.canonical import (
    canonical_lines,
    canonical_lines_columns,
    escaped_binary,
    evidence_sha256,
    needs_escape,
    tabbed,
)

_TS = 1_741_140_000_000_001  # 2025-03-05T02:00:00.000001Z


@pytest.mark.parametrize(
    ("raw", "written"),
    [
        ("a\rb", "a\\rb"),  # a carriage return alone: the only byte to escape
        ("\r", "\\r"),
        ("a\tb", "a\\tb"),
        ("a\nb", "a\\nb"),
        ("a\\b", "a\\\\b"),
        ("\\r\r\n\t", "\\\\r\\r\\n\\t"),
        ("plain", "plain"),
    ],
)
def test_each_escape_is_written_as_documented(raw: str, written: str) -> None:
    """Step 3: backslash, TAB, LF and CR are written `\\\\`, `\\t`, `\\n`, `\\r`, in the
    request_id and in the credential, by both the table form and the column form."""
    table = pa.table(
        {
            "request_id": [raw],
            "ts": pa.array([_TS], pa.timestamp("us", tz="UTC")),
            "credential": [raw],
            "posts": pa.array([7], pa.int64()),
        }
    )
    line = f"2025-03-05T02:00:00.000001Z\t{written}\t{written}\t7\n"
    assert canonical_lines(table).to_pylist() == [line]
    assert needs_escape(pa.array([raw])) == (raw != written)
    assert escaped_binary(pa.array([raw])).to_pylist() == [written.encode()]
    columns = canonical_lines_columns(
        np.array([_TS], np.int64),
        escaped_binary(table["request_id"]),
        tabbed(escaped_binary(table["credential"])),
        np.array([7], np.int64),
    )
    assert columns.to_pylist() == [line.encode()]
    assert evidence_sha256(table) == hashlib.sha256(line.encode()).hexdigest()


@pytest.mark.parametrize(
    ("kind", "wide"),
    [
        (pa.string(), False),
        (pa.binary(), False),
        (pa.large_string(), True),
        (pa.large_binary(), True),
    ],
)
def test_escaped_binary_keeps_64_bit_offsets_only_for_large_inputs(
    kind: pa.DataType, wide: bool
) -> None:
    """Large strings or binaries stay large (64-bit offsets), the others become plain binary."""
    got = escaped_binary(pa.array([b"a\tb", b"c"], pa.large_binary()).cast(kind))
    assert got.type == (pa.large_binary() if wide else pa.binary())
    assert got.to_pylist() == [b"a\\tb", b"c"]


@pytest.mark.parametrize(
    ("values", "want"),
    [
        ([], False),
        (["a\x01b", "\x0e"], False),
        (["a\rb"], True),
        (["\\"], True),
        (["plain"], False),
    ],
)
def test_needs_escape_only_for_backslash_tab_lf_cr(values: list[str], want: bool) -> None:
    """Other control bytes are not escaped; an empty column needs nothing."""
    assert needs_escape(pa.array(values, pa.string())) is want


def test_the_clock_tables_spell_every_second_and_microsecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lookup tables behind the column form's instants, built afresh: `HH:MM:SS.` for
    each second of a day and `ffffffZ` + TAB for each microsecond, checked against
    `datetime`'s own spelling at spread-out and edge entries. (The tables are built once per
    process and kept: without the reset a process that already built them, such as a mutation
    run's forked worker, would never run the code under test.)"""
    from datetime import UTC, datetime, timedelta

    from consentry.scraping import canonical

    monkeypatch.setattr(canonical, "_CLOCK", None)
    monkeypatch.setattr(canonical, "_MICROS", None)
    clock, micros = canonical._clock_tables()
    assert (clock.dtype.itemsize, len(clock)) == (9, 86_400)
    assert (micros.dtype.itemsize, len(micros)) == (8, 1_000_000)
    midnight = datetime(2025, 3, 5, tzinfo=UTC)
    for second in (0, 1, 9, 10, 59, 60, 599, 600, 3599, 3600, 36_000, 45_296, 86_399):
        spelled = (midnight + timedelta(seconds=second)).strftime("%H:%M:%S.").encode()
        assert clock[second].tobytes() == spelled, second
    for micro in (0, 1, 9, 10, 99, 100, 12_345, 100_000, 654_321, 999_999):
        assert micros[micro].tobytes() == f"{micro:06d}Z\t".encode(), micro
    # Once built, the same tables are returned (they are not rebuilt per call).
    again = canonical._clock_tables()
    assert again[0] is clock
    assert again[1] is micros


@pytest.mark.parametrize(
    ("first_day", "last_day", "fast"),
    [
        (20_152, 20_152, True),  # 2025-03-05
        (-354_285, -354_285, True),  # 1000-01-01: the first day the tables spell
        (-354_286, -354_286, False),  # 0999-12-31: three year digits, left to strftime
        (2_932_896, 2_932_896, True),  # 9999-12-31
        (2_932_897, 2_932_897, False),  # past 9999
        (-354_286, 20_152, False),  # one end out of range is enough
        (20_152, 2_932_897, False),
        (51_000, 51_001, True),  # 2109: large day numbers, a short span
        (0, 100_000, True),  # the longest span of days the tables take
        (0, 100_001, False),
    ],
)
def test_instants_are_spelled_by_tables_only_in_range(
    first_day: int, last_day: int, fast: bool
) -> None:
    """`_instant_pieces`' contract: table lookups for years 1000-9999 over at most 100,000
    days, None otherwise (the caller then spells with strftime); in range, each instant's
    three pieces join to `YYYY-MM-DDTHH:MM:SS.ffffffZ` + TAB, as strftime spells it."""
    from consentry.scraping.canonical import _instant_pieces

    day_us = 86_400_000_000
    ts = np.array([first_day * day_us + 45_296_000_123, last_day * day_us], dtype=np.int64)
    pieces = _instant_pieces(ts)
    if not fast:
        assert pieces is None
        return
    assert pieces is not None
    joined = pa.compute.binary_join_element_wise(*pieces, b"")
    # strftime's %S of a microsecond timestamp carries the six digits of the fraction.
    spelled = pa.compute.strftime(pa.array(ts, pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%S")
    assert joined.to_pylist() == [f"{s}Z\t".encode() for s in spelled.to_pylist()]
    assert joined.to_pylist()[0].endswith(b":34:56.000123Z\t")


def test_no_instants_have_no_pieces() -> None:
    from consentry.scraping.canonical import _instant_pieces

    assert _instant_pieces(np.array([], dtype=np.int64)) is None


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_no_accesses_have_no_lines_of_the_inputs_width(kind: pa.DataType) -> None:
    empty = np.array([], dtype=np.int64)
    lines = canonical_lines_columns(empty, pa.array([], kind), pa.array([], pa.binary()), empty)
    assert lines.type == kind
    assert len(lines) == 0
