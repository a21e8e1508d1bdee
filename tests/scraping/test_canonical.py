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
