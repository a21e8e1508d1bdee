"""Who made each access: credentials and IP ranges owned by entities over time.

Rules (docs/scraping.md):

1. An `entities` row owns its credential during `[valid_from, valid_to)`; a null end is open.
   A credential that parses as a CIDR range (`203.0.113.0/24`, `2001:db8::/32`) owns every
   IP address inside it; anything else is matched exactly.
2. The most specific owner wins: an exact credential match, then the longest prefix.
3. An access nobody owns at its instant belongs to an entity named after its credential.
4. Accesses with the same `request_id` count once: the first by (ts, credential, posts).
5. One credential may not be owned twice at the same instant (overlapping rows of one
   credential are bad input, reported at the later row).

The engine path is Ibis (DuckDB or PySpark) and uses an equi-join on the credential plus a
range condition on the instant: no as-of join, which PySpark lacks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.schema import TIMESTAMP_TYPE
from consentry.sources.entities import RowOrigins, check_entities

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir

__all__ = [
    "EXACT_SPECIFICITY",
    "FAR_FUTURE",
    "FAR_PAST",
    "Owners",
    "attribute",
    "check_owners",
    "epoch_us",
    "ipv4_to_int",
    "owner_candidates",
]

EXACT_SPECIFICITY = 1000
"""Specificity of an exact credential match (beats any prefix length, at most 128)."""

FAR_PAST = datetime(1, 1, 2, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 12, 30, tzinfo=UTC)
"""Stand-ins for open validity ends, inside both engines' timestamp ranges."""

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"^{_OCTET}(\.{_OCTET}){{3}}$"
_IP_LIKE = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$|:"


@dataclass(frozen=True, slots=True)
class Owners:
    """A checked `entities` table: exact rows and CIDR rows, with open ends filled in.

    `exact` and `ranges` have columns credential, entity, valid_from, valid_to (timestamps,
    never null: FAR_PAST / FAR_FUTURE stand for open ends); `ranges` also has `network`
    (the parsed network objects, one per row).
    """

    exact: pa.Table
    ranges: pa.Table
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @property
    def empty(self) -> bool:
        return bool(self.exact.num_rows == 0 and self.ranges.num_rows == 0)


def check_owners(table: pa.Table, *, location: str, row_numbers: pa.Array | None = None) -> Owners:
    """Check an `entities` table (canonical schema) and split it into exact and range rows.

    1. The rules and their messages are the import's (`check_entities`): valid_to after
       valid_from, CIDR ranges without host bits (compared in canonical spelling), and no
       two rows of one credential overlapping in time (the later row is reported).
    2. Every problem is `FILE:ROW: field: message`; nothing is returned when any is found.
    """
    checked = check_entities(table, RowOrigins.single(location, table.num_rows, row_numbers))

    def part(mask: npt.NDArray[np.bool_]) -> pa.Table:
        idx = pa.array(np.flatnonzero(mask))
        return pa.table(
            {
                "credential": checked.canonical.take(idx),
                "entity": table["entity"].take(idx),
                "valid_from": pc.fill_null(
                    table["valid_from"].take(idx), pa.scalar(FAR_PAST, TIMESTAMP_TYPE)
                ),
                "valid_to": pc.fill_null(
                    table["valid_to"].take(idx), pa.scalar(FAR_FUTURE, TIMESTAMP_TYPE)
                ),
            }
        )

    ranges = part(checked.is_range)
    networks = tuple(ipaddress.ip_network(c) for c in ranges["credential"].to_pylist())
    return Owners(exact=part(~checked.is_range), ranges=ranges, networks=networks)


def ipv4_to_int(values: pa.Array) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """(is a dotted-quad IPv4 address, its 32-bit value) for each string, vectorised."""
    ok = np.asarray(pc.fill_null(pc.match_substring_regex(values, _IPV4), False), dtype=bool)
    parts = pc.split_pattern(pc.if_else(pa.array(ok), values, pa.scalar("0.0.0.0")), ".")
    flat = pc.list_flatten(parts).cast(pa.int64()).to_numpy().reshape(-1, 4)
    ints = (flat[:, 0] << 24) | (flat[:, 1] << 16) | (flat[:, 2] << 8) | flat[:, 3]
    return ok, ints.astype(np.int64)


def owner_candidates(credentials: pa.Array, owners: Owners) -> pa.Table:
    """Every (credential, entity, valid_from, valid_to, specificity) that may own an access.

    1. Exact rows match their credential (specificity EXACT_SPECIFICITY).
    2. Each distinct access credential that is an IP address inside a range row gets that
       row with specificity = the prefix length. IPv4 addresses are parsed and masked
       vectorised; IPv6 addresses (rare in logs keyed by API keys) with `ipaddress`.
    """
    exact = owners.exact.append_column(
        "specificity", pa.array(np.full(owners.exact.num_rows, EXACT_SPECIFICITY, np.int64))
    )
    pieces = [exact]
    if owners.ranges.num_rows and len(credentials):
        distinct = pc.unique(credentials.cast(pa.string()))
        ok, ints = ipv4_to_int(distinct)
        v6_mask = (
            np.asarray(pc.fill_null(pc.match_substring(distinct, ":"), False), dtype=bool) & ~ok
        )
        v6_values = [(i, distinct[i].as_py()) for i in np.flatnonzero(v6_mask).tolist()]
        v6_addresses: list[tuple[int, ipaddress.IPv6Address]] = []
        for i, text in v6_values:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if isinstance(address, ipaddress.IPv6Address):
                v6_addresses.append((i, address))
        for row, network in enumerate(owners.networks):
            if isinstance(network, ipaddress.IPv4Network):
                shift = 32 - network.prefixlen
                base = int(network.network_address) >> shift
                hits = np.flatnonzero(ok & ((ints >> shift) == base))
            else:
                hits = np.array([i for i, a in v6_addresses if a in network], dtype=np.int64)
            if len(hits) == 0:
                continue
            # The range row repeated once per hit (a take, not a Python object per hit).
            repeated = owners.ranges.slice(row, 1).take(
                pa.array(np.zeros(len(hits), dtype=np.int64))
            )
            pieces.append(
                pa.table(
                    {
                        "credential": distinct.take(pa.array(hits)),
                        "entity": repeated["entity"],
                        "valid_from": repeated["valid_from"],
                        "valid_to": repeated["valid_to"],
                        "specificity": pa.array(np.full(len(hits), network.prefixlen, np.int64)),
                    }
                )
            )
    return pa.concat_tables([p.cast(pieces[0].schema) for p in pieces])


def epoch_us(backend: ibis.BaseBackend, ts: ir.TimestampValue) -> ir.IntegerValue:
    """Microseconds since the epoch of a UTC timestamp, exact on both engines: Spark's
    `unix_micros`, which Ibis's SQL writer (sqlglot) spells `EPOCH_US` for DuckDB. One
    expression for every `backend` (the argument says where it runs, nothing more)."""
    from consentry.scraping._udfs import unix_micros

    return unix_micros(ts)


def _ip_like(credential: ir.StringValue) -> ir.BooleanValue:
    return credential.re_search(_IP_LIKE)


_ACCESS_COLUMNS = ("request_id", "ts", "credential", "posts")
"""The columns of an access the assessment keeps (plus its entity and instant)."""


def attribute(backend: ibis.BaseBackend, events: ir.Table, owners: Owners) -> ir.Table:
    """`events` (canonical access_events) with an `entity` and `ts_us` column, deduplicated.

    1. Duplicates of a request_id are dropped, keeping the first by (ts, credential, posts)
       (`_first_of_each_request`).
    2. Distinct IP-like credentials are fetched (only when there are range rows) to find
       which ranges cover them (`owner_candidates`); the candidates go back as a table.
    3. Accesses whose credential has no candidate are their own entity (a semi/anti join on
       the small candidate set, no join of every access; `_with_owners`).
    4. The others join their candidates on credential AND valid_from <= ts < valid_to;
       the most specific match per request wins; none valid: their own entity
       (`_best_owners`).
    """
    unique = _first_of_each_request(events)
    credentials = pa.array([], pa.string())
    if owners.ranges.num_rows:
        ip_like = unique.filter(_ip_like(unique.credential)).select("credential").distinct()
        credentials = backend.to_pyarrow(ip_like)["credential"].combine_chunks()
    candidates = owner_candidates(credentials, owners)
    if candidates.num_rows == 0:
        plain = unique.select(*_ACCESS_COLUMNS).mutate(entity=unique.credential)
        return plain.mutate(ts_us=epoch_us(backend, plain.ts))
    both = _with_owners(unique, candidates)
    return both.mutate(ts_us=epoch_us(backend, both.ts))


def _first_of_each_request(events: ir.Table) -> ir.Table:
    """Rule 4: one row per request_id, the first by (ts, credential, posts).

    Only request ids that occur more than once need ranking: one hash aggregate finds
    them, and the (costly) window runs on their rows alone.
    """
    import ibis

    base = events.select(*_ACCESS_COLUMNS)
    counted = base.group_by("request_id").agg(copies=base.count())
    repeated = counted.filter(counted.copies > 1).select("request_id")
    single = base.anti_join(repeated, "request_id")
    doubles = base.semi_join(repeated, "request_id")
    ranked = doubles.mutate(
        _dup=ibis.row_number().over(
            group_by=doubles.request_id,
            order_by=[doubles.ts, doubles.credential, doubles.posts],
        )
    )
    return single.union(ranked.filter(ranked._dup == 0).drop("_dup"))


def _with_owners(unique: ir.Table, candidates: pa.Table) -> ir.Table:
    """Each access with its `entity` (steps 3 and 4 of `attribute`): an access whose
    credential has no candidate owner is its own entity (rule 3); the others take their
    best valid candidate (`_best_owners`), else are their own entity too."""
    import ibis

    candidate = ibis.memtable(
        candidates.rename_columns(["c_credential", "c_entity", "c_from", "c_to", "c_spec"])
    )
    candidate_credentials = candidate.select(credential=candidate.c_credential).distinct()
    plain = unique.anti_join(candidate_credentials, "credential").select(*_ACCESS_COLUMNS)
    plain = plain.mutate(entity=plain.credential)
    owned = unique.semi_join(candidate_credentials, "credential").select(*_ACCESS_COLUMNS)
    best = _best_owners(owned, candidate)
    resolved = owned.left_join(best, owned.request_id == best.m_request)
    resolved = resolved.select(
        *_ACCESS_COLUMNS, entity=ibis.coalesce(resolved.m_entity, resolved.credential)
    )
    return plain.union(resolved)


def _best_owners(owned: ir.Table, candidate: ir.Table) -> ir.Table:
    """Rules 1 and 2 for the accesses `owned` and their candidate owners (`candidate`): per
    request, the candidate of its credential valid at its instant (`c_from <= ts < c_to`)
    with the highest specificity, ties by entity name (`m_request`, `m_entity`)."""
    import ibis

    matches = owned.inner_join(
        candidate,
        [
            owned.credential == candidate.c_credential,
            candidate.c_from <= owned.ts,
            owned.ts < candidate.c_to,
        ],
    ).select(m_request=owned.request_id, m_entity=candidate.c_entity, m_spec=candidate.c_spec)
    best = matches.mutate(
        _rank=ibis.row_number().over(
            group_by=matches.m_request, order_by=[matches.m_spec.desc(), matches.m_entity]
        )
    )
    return best.filter(best._rank == 0).select("m_request", "m_entity")
