"""Who owns a credential: dotted-quad parsing and the candidate owners of each credential
(exact rows, IPv4 and IPv6 ranges with their prefix lengths), as docs/scraping.md states."""

from __future__ import annotations

import pyarrow as pa
import pytest

from consentry.schema import arrow_schema
from consentry.scraping.attribution import (
    EXACT_SPECIFICITY,
    check_owners,
    ipv4_to_int,
    owner_candidates,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.0.0.0", 0),
        ("10.0.0.1", 167_772_161),
        ("255.255.255.255", 2**32 - 1),
        ("192.168.1.200", 3_232_235_976),
        ("1.2.3.4", 16_909_060),
        ("256.0.0.1", None),
        ("1.2.3.260", None),
        ("01.2.3.4", None),
        ("1.2.3", None),
        ("1.2.3.4.5", None),
        (" 1.2.3.4", None),
        ("1.2.3.4/32", None),
        ("2001:db8::1", None),
        ("ak_1", None),
    ],
)
def test_a_dotted_quad_is_four_octets_of_at_most_255(text: str, value: int | None) -> None:
    ok, ints = ipv4_to_int(pa.array([text, "9.9.9.9"]))
    assert ok.tolist() == [value is not None, True]
    if value is not None:
        assert int(ints[0]) == value
    assert int(ints[1]) == 151_587_081


def test_candidates_are_exact_rows_and_every_covering_range_with_its_prefix() -> None:
    rows = [
        {"credential": "ak_1", "entity": "org-a", "valid_from": None, "valid_to": None},
        {"credential": "10.0.0.0/8", "entity": "isp", "valid_from": None, "valid_to": None},
        {"credential": "10.1.0.0/16", "entity": "hoster", "valid_from": None, "valid_to": None},
        {"credential": "10.1.2.3", "entity": "lab", "valid_from": None, "valid_to": None},
        {"credential": "0.0.0.0/0", "entity": "world", "valid_from": None, "valid_to": None},
        {"credential": "2001:db8::/32", "entity": "v6", "valid_from": None, "valid_to": None},
        {"credential": "2001:db8:1::/48", "entity": "v6-lab", "valid_from": None, "valid_to": None},
    ]
    owners = check_owners(pa.Table.from_pylist(rows, schema=arrow_schema("entities")), location="e")
    credentials = pa.array(
        # "a:b" first: a colon that is no IPv6 address must not end the search for the ones
        # after it.
        ["a:b", "10.1.2.3", "10.2.0.1", "11.0.0.1", "2001:db8:1::5", "2001:db9::1", "ak_2", None]
    )
    got = {
        (r["credential"], r["entity"], r["specificity"])
        for r in owner_candidates(credentials, owners).to_pylist()
    }
    assert got == {
        ("ak_1", "org-a", EXACT_SPECIFICITY),
        ("10.1.2.3", "lab", EXACT_SPECIFICITY),
        ("10.1.2.3", "isp", 8),
        ("10.1.2.3", "hoster", 16),
        ("10.1.2.3", "world", 0),
        ("10.2.0.1", "isp", 8),
        ("10.2.0.1", "world", 0),
        ("11.0.0.1", "world", 0),
        ("2001:db8:1::5", "v6", 32),
        ("2001:db8:1::5", "v6-lab", 48),
    }
    # Without accesses, or without ranges, only the exact rows are candidates.
    assert {
        r["entity"] for r in owner_candidates(pa.array([], pa.string()), owners).to_pylist()
    } == {
        "org-a",
        "lab",
    }
    exact_only = check_owners(
        pa.Table.from_pylist(rows[:1], schema=arrow_schema("entities")), location="e"
    )
    assert owner_candidates(credentials, exact_only).num_rows == 1
    assert not owners.empty
    empty = check_owners(pa.Table.from_pylist([], schema=arrow_schema("entities")), location="e")
    assert empty.empty


def test_without_owners_each_credential_is_its_own_entity() -> None:
    """Steps 1 and 3 with an empty entities table (no candidate at all): duplicates of a
    request id are dropped, keeping the first by (ts, credential, posts), each access is its
    credential's entity, and `ts_us` is the instant in microseconds since the epoch."""
    import ibis

    from consentry.engine import connect
    from consentry.scraping.attribution import attribute
    from tests.scraping.cases import BASE, events_table

    events = events_table(
        [(1, 5, "ak_1", 3), (2, 7, "10.0.0.1", 4), (1, 2, "ak_9", 8), (3, -1, "ak_1", 1)]
    )
    no_owners = check_owners(
        pa.Table.from_pylist([], schema=arrow_schema("entities")), location="e"
    )
    backend = connect("duckdb")
    table = backend.to_pyarrow(
        attribute(backend, ibis.memtable(events), no_owners).order_by("request_id")
    )
    base_us = int(BASE.timestamp()) * 1_000_000
    got = [
        (r["request_id"], r["entity"], r["credential"], r["posts"], r["ts_us"])
        for r in table.to_pylist()
    ]
    assert got == [
        ("r001", "ak_9", "ak_9", 8, base_us + 2),  # the earlier of the two r001
        ("r002", "10.0.0.1", "10.0.0.1", 4, base_us + 7),
        ("r003", "ak_1", "ak_1", 1, base_us - 1),
    ]


def test_the_most_specific_owner_wins_whatever_its_name() -> None:
    """Step 2: of the owners valid at an access, the most specific (an exact row, then the
    longest prefix) wins, not the first name; a credential whose owners are all outside
    their validity at the access is its own entity."""
    from datetime import timedelta

    import ibis

    from consentry.engine import connect
    from consentry.scraping.attribution import attribute
    from tests.scraping.cases import BASE, events_table

    us = timedelta(microseconds=1)
    rows = [
        {"credential": "10.0.0.0/8", "entity": "aaa-isp", "valid_from": None, "valid_to": None},
        {"credential": "10.1.2.3", "entity": "zzz-lab",
         "valid_from": BASE + 10 * us, "valid_to": BASE + 20 * us},
        {"credential": "ak_7", "entity": "org", "valid_from": BASE + 100 * us, "valid_to": None},
    ]  # fmt: skip
    owners = check_owners(pa.Table.from_pylist(rows, schema=arrow_schema("entities")), location="e")
    events = events_table([(1, 15, "10.1.2.3", 1), (2, 25, "10.1.2.3", 1), (3, 5, "ak_7", 1)])
    backend = connect("duckdb")
    table = backend.to_pyarrow(
        attribute(backend, ibis.memtable(events), owners).order_by("request_id")
    )
    assert [(r["request_id"], r["entity"]) for r in table.to_pylist()] == [
        ("r001", "zzz-lab"),  # the exact row, valid at the access, beats the /8
        ("r002", "aaa-isp"),  # the exact row has ended: the range remains
        ("r003", "ak_7"),  # its only owner starts later: the credential itself
    ]


def test_problems_name_the_rows_they_were_read_from() -> None:
    from consentry.errors import BadInput

    rows = [
        {"credential": "ak_1", "entity": "a", "valid_from": None, "valid_to": None},
        {"credential": "ak_1", "entity": "b", "valid_from": None, "valid_to": None},
    ]
    table = pa.Table.from_pylist(rows, schema=arrow_schema("entities"))
    with pytest.raises(BadInput, match=r"owners\.csv:9: "):
        check_owners(table, location="owners.csv", row_numbers=pa.array([7, 9]))
