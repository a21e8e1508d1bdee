"""The transparency report: what the platform did with people's posts, in counts only.

Sources: the consent ledger for opt-ins and opt-outs (explicit choices, GPC included), and
the audit log for everything else, read by event type name, so the capabilities present
at run time (deliveries, revocations, retention, scraping) appear and absent ones show
zero. Cells counting people are suppressed below `SMALL_CELL` (see `suppress`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import sqlalchemy as sa

from consentry.audit.events import AUDIT_EVENT_TYPES
from consentry.audit.log import AuditLog
from consentry.instants import rfc3339
from consentry.signing import Signer
from consentry.store import Store
from consentry.store.models import AuditEventRow, ConsentEventRow, Subject

__all__ = [
    "FAMILIES",
    "SMALL_CELL",
    "bar_chart",
    "render_markdown",
    "suppress",
    "transparency_report",
]

SMALL_CELL: Final = 10
"""Counts of people below this are not published (shown as `<10`)."""

FAMILIES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("revocations", "Revocations issued to licensees and confirmed", ("revocation.",)),
    ("retention", "Retention purges and legal holds", ("retention.", "hold.")),
    ("scraping", "Scraping assessments and amounts", ("scraping.",)),
    ("policy", "Policy versions published", ("policy.",)),
)
"""Report section key, title, and the audit event type prefixes it summarises."""

_NOT_SUMMED: Final = ("_id", "_seq", "_sha256", "_ref")


def suppress(cells: list[dict[str, Any]], group_keys: Sequence[str]) -> None:
    """Suppress small counts of people in place (`users` -> None, `suppressed` True).

    1. Primary: every cell with 0 < users < SMALL_CELL.
    2. Secondary: within a group (cells sharing `group_keys`) whose total is published,
       a single suppressed cell could be recovered by subtraction, so the smallest other
       published cell of that group is suppressed too.
    """
    for cell in cells:
        cell["suppressed"] = 0 < cell["users"] < SMALL_CELL
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[k] for k in group_keys), []).append(cell)
    for members in groups.values():
        hidden = [c for c in members if c["suppressed"]]
        shown = sorted((c for c in members if not c["suppressed"]), key=lambda c: c["users"])
        if len(hidden) == 1 and shown:
            shown[0]["suppressed"] = True
    for cell in cells:
        if cell["suppressed"]:
            cell["users"] = None


def _published(total: int) -> int | None:
    return total if total == 0 or total >= SMALL_CELL else None


def _consent_section(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Latest explicit choice per user and purpose made in [start, end), by region."""
    e = ConsentEventRow.__table__
    ranked = (
        sa.select(
            e.c.user_id,
            e.c.purpose,
            e.c.choice,
            sa.func.row_number()
            .over(
                partition_by=[e.c.user_id, e.c.purpose],
                order_by=[e.c.at.desc(), e.c.event_id.desc()],
            )
            .label("rank"),
        )
        .where(e.c.at >= start, e.c.at < end)
        .subquery()
    )
    region = sa.func.coalesce(sa.func.upper(Subject.region), "unknown")
    query = (
        sa.select(ranked.c.purpose, region.label("region"), ranked.c.choice, sa.func.count())
        .select_from(ranked.outerjoin(Subject, Subject.user_id == ranked.c.user_id))
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.purpose, region, ranked.c.choice)
        .order_by(ranked.c.purpose, region, ranked.c.choice)
    )
    with store.session() as session:
        rows = session.execute(query).all()
    cells = [
        {
            "purpose": purpose,
            "region": reg,
            "choice": "opted_in" if choice == "allow" else "opted_out",
            "users": int(n),
        }
        for purpose, reg, choice, n in rows
    ]
    totals: dict[str, dict[str, int]] = {}
    for cell in cells:
        entry = totals.setdefault(cell["purpose"], {"opted_in": 0, "opted_out": 0})
        entry[cell["choice"]] += cell["users"]
    suppress(cells, ("purpose", "choice"))
    return {
        "small_cell_threshold": SMALL_CELL,
        "purposes": {
            p: {k: _published(v) for k, v in t.items()} for p, t in sorted(totals.items())
        },
        "cells": cells,
    }


def _events(
    store: Store, prefixes: Sequence[str], start: datetime, end: datetime
) -> list[tuple[str, dict[str, Any]]]:
    conditions = [AuditEventRow.event_type.startswith(p, autoescape=True) for p in prefixes]
    query = (
        sa.select(AuditEventRow.event_type, AuditEventRow.payload)
        .where(sa.or_(*conditions), AuditEventRow.at >= start, AuditEventRow.at < end)
        .order_by(AuditEventRow.seq)
    )
    with store.session() as session:
        return [(t, json.loads(p)) for t, p in session.execute(query).all()]


def _summable(name: str, value: Any) -> Decimal | None:
    if name.endswith(_NOT_SUMMED) or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if isinstance(value, str) and "amount" in name:
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def _family_section(
    store: Store, prefixes: Sequence[str], start: datetime, end: datetime
) -> dict[str, Any]:
    """Per event type of the family: how many events, and the sum of each numeric field."""
    types = {t: 0 for t in AUDIT_EVENT_TYPES if t.startswith(tuple(prefixes))}
    sums: dict[str, dict[str, Decimal]] = {t: {} for t in types}
    for event_type, payload in _events(store, prefixes, start, end):
        types[event_type] = types.get(event_type, 0) + 1
        fields = sums.setdefault(event_type, {})
        for name, value in payload.items():
            number = _summable(name, value)
            if number is not None:
                fields[name] = fields.get(name, Decimal(0)) + number
    return {
        t: {
            "events": types[t],
            "totals": {k: _plain(v) for k, v in sorted(sums.get(t, {}).items())},
        }
        for t in sorted(types)
    }


def _plain(value: Decimal) -> int | str:
    return int(value) if value == value.to_integral_value() else str(value)


def _deliveries_section(store: Store, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Deliveries per licensee (names from `licensee.changed`), with record counts."""
    names = {
        p["licensee_id"]: p["name"]
        for _, p in _events(
            store, ("licensee.changed",), datetime.min.replace(tzinfo=start.tzinfo), end
        )
    }
    per: dict[str, dict[str, Any]] = {}
    for _, p in _events(store, ("delivery.built",), start, end):
        entry = per.setdefault(
            p["licensee_id"],
            {
                "licensee_id": p["licensee_id"],
                "licensee": names.get(p["licensee_id"], p["licensee_id"]),
                "purposes": set(),
                "deliveries": 0,
                "records": 0,
                "considered": 0,
            },
        )
        entry["deliveries"] += 1
        entry["records"] += int(p["delivered"])
        entry["considered"] += int(p["considered"])
        entry["purposes"].add(p["purpose"])
    return [
        {**v, "purposes": sorted(v["purposes"])}
        for v in sorted(per.values(), key=lambda v: (-v["records"], v["licensee"]))
    ]


def transparency_report(
    store: Store, signer: Signer, *, start: datetime, end: datetime
) -> dict[str, Any]:
    """The report for [start, end): consent, deliveries, the event families, and a signed
    checkpoint of the audit log the counts were read from (not recorded)."""
    checkpoint = AuditLog(store).checkpoint(signer, record=False)
    return {
        "from": rfc3339(start),
        "to": rfc3339(end),
        "consent": _consent_section(store, start, end),
        "deliveries": _deliveries_section(store, start, end),
        **{key: _family_section(store, prefixes, start, end) for key, _, prefixes in FAMILIES},
        "log": {
            "size": checkpoint.checkpoint.size,
            "checkpoint": checkpoint.note(),
        },
    }


# --- presentation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    width: int
    y: int
    colour: str


def bar_chart(rows: Sequence[tuple[str, int, str]], width: int = 360) -> list[Bar]:
    """Horizontal bars scaled to the largest value; a non-zero bar is at least 1 wide."""
    top = max((v for _, v, _ in rows), default=0) or 1
    return [
        Bar(label, value, max(1, round(width * value / top)) if value else 0, i * 22, colour)
        for i, (label, value, colour) in enumerate(rows)
    ]


def chart_rows(report: Mapping[str, Any]) -> dict[str, list[Bar]]:
    """The charts the page and the HTML report draw: choices per purpose, records per
    licensee."""
    choices: list[tuple[str, int, str]] = []
    for purpose, totals in report["consent"]["purposes"].items():
        for key, colour in (("opted_in", "#0a6b36"), ("opted_out", "#a3221b")):
            value = totals[key]
            if value:
                choices.append((f"{purpose} · {key.replace('_', ' ')}", value, colour))
    records = [(d["licensee"], d["records"], "#0b57d0") for d in report["deliveries"]]
    return {"choices": bar_chart(choices), "records": bar_chart(records)}


def _cell(value: int | None) -> str:
    return f"<{SMALL_CELL}" if value is None else f"{value:,}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown (the same numbers as JSON and HTML)."""
    out = [
        "# Transparency report",
        "",
        f"Period: {report['from']} to {report['to']} (end exclusive). Counts of people below "
        f"{SMALL_CELL} are shown as `<{SMALL_CELL}`.",
        "",
        "## Opt-ins and opt-outs",
        "",
        "| purpose | region | opted in | opted out |",
        "|---|---|---:|---:|",
    ]
    grid: dict[tuple[str, str], dict[str, int | None]] = {}
    for cell in report["consent"]["cells"]:
        grid.setdefault((cell["purpose"], cell["region"]), {})[cell["choice"]] = cell["users"]
    for (purpose, region), counts in sorted(grid.items()):
        out.append(
            f"| {purpose} | {region} | {_cell(counts.get('opted_in', 0))} | "
            f"{_cell(counts.get('opted_out', 0))} |"
        )
    if not grid:
        out.append("| — | — | 0 | 0 |")
    out += ["", "## Deliveries per licensee", "", "| licensee | purposes | deliveries | records |"]
    out.append("|---|---|---:|---:|")
    for d in report["deliveries"]:
        out.append(
            f"| {d['licensee']} | {', '.join(d['purposes'])} | {d['deliveries']:,} | "
            f"{d['records']:,} |"
        )
    if not report["deliveries"]:
        out.append("| none | — | 0 | 0 |")
    for key, title, _ in FAMILIES:
        out += ["", f"## {title}", "", "| event | events | totals |", "|---|---:|---|"]
        section = report[key]
        for event_type, data in section.items():
            totals = ", ".join(f"{k} {v}" for k, v in data["totals"].items()) or "—"
            out.append(f"| `{event_type}` | {data['events']:,} | {totals} |")
        if not section:
            out.append("| none | 0 | — |")
    out += [
        "",
        "## Audit log checkpoint",
        "",
        f"Read from a log of {report['log']['size']:,} events; signed checkpoint:",
        "",
        "```",
        report["log"]["checkpoint"].rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(out)
