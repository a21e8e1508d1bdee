"""The transparency report: what the platform did with people's posts, in counts only.

Sources: the consent ledger for opt-ins and opt-outs (explicit choices, GPC included), the
revocation log for how fast licensees confirmed deletions, and the audit log for everything
else, read by event type name, so the capabilities present at run time (deliveries,
revocations, retention, scraping) appear and absent ones show zero. Cells counting people
are suppressed below `SMALL_CELL` (see `suppress`).

The second half of the module turns the report into plain words (event titles, field
labels, money, durations) for the Markdown report and the HTML pages.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit.events import AUDIT_EVENT_TYPES
from consentry.audit.log import AuditLog
from consentry.instants import rfc3339
from consentry.policy import format_money
from consentry.signing import Signer
from consentry.store import Store
from consentry.store.models import AuditEventRow, ConsentEventRow, RevocationRow, Subject

__all__ = [
    "DEFAULT_PERIOD",
    "EVENT_TITLES",
    "FAMILIES",
    "FIELD_LABELS",
    "SMALL_CELL",
    "confirmation_summary",
    "default_period",
    "event_title",
    "family_details",
    "field_label",
    "format_count",
    "format_duration",
    "latest_choice",
    "month_span",
    "months_between",
    "ordered_events",
    "render_markdown",
    "suppress",
    "transparency_report",
]

SMALL_CELL: Final = 10
"""Counts of people below this are not published (shown as `<10`)."""

DEFAULT_PERIOD: Final = timedelta(days=365)
"""The length of the default period (see `default_period`)."""

FAMILIES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    ("revocations", "Revocations issued to licensees and confirmed", ("revocation.",)),
    ("retention", "Retention purges and legal holds", ("retention.", "hold.")),
    ("scraping", "Scraping assessments", ("scraping.",)),
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


# --- the period ---------------------------------------------------------------------------


def default_period(latest_choice: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The period a report covers when none is asked for: up to now, reaching back far
    enough to hold the latest 12 months in which people made choices.

    1. The end is `now`.
    2. The start is 365 days before `now`; but when the latest consent choice
       (`latest_choice`, see `latest_choice`) is older than that, 365 days before the end of
       that choice's UTC day — so a platform where nobody has chosen anything for a year
       (the demo, whose choices end on 30 June 2025) still shows its last year of choices,
       and everything done since (deliveries, revocations, assessments).
    3. No choice at all, or none older than a year: rule 2's 365 days.
    """
    start = now - DEFAULT_PERIOD
    if latest_choice is not None and latest_choice < start:
        day = latest_choice.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = day + timedelta(days=1) - DEFAULT_PERIOD
    return start, now


def latest_choice(store: Store) -> datetime | None:
    """The instant of the latest consent choice in the ledger, or None."""
    with store.session() as session:
        found: datetime | None = session.scalar(sa.select(sa.func.max(ConsentEventRow.at)))
    return found


def months_between(start: datetime, end: datetime) -> list[str]:
    """The calendar months (UTC, `YYYY-MM`) that overlap [start, end), oldest first."""
    first, last = start.astimezone(UTC), (end - timedelta(microseconds=1)).astimezone(UTC)
    year, month = first.year, first.month
    out = []
    while (year, month) <= (last.year, last.month):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _month_of(session: Session, column: Any) -> Any:
    """SQL for the UTC calendar month (`YYYY-MM`) of an instant column."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_char(sa.func.timezone("UTC", column), "YYYY-MM")
    # SQLite holds instants as 'YYYY-MM-DD HH:MM:SS.ffffff' text in UTC (UtcDateTime).
    return sa.func.substr(column, 1, 7)


def month_span(months: Sequence[str]) -> list[str]:
    """Every month from the earliest to the latest of `months`, gaps included."""
    if not months:
        return []
    lo, hi = min(months), max(months)
    out = [lo]
    while out[-1] < hi:
        year, month = int(out[-1][:4]), int(out[-1][5:])
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        out.append(f"{year:04d}-{month:02d}")
    return out


# --- the sections -------------------------------------------------------------------------


def _consent_section(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Latest explicit choice per user and purpose made in [start, end), by region, and per
    calendar month (the latest choice of each user and purpose within that month)."""
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
        month = _month_of(session, e.c.at)
        per_month = (
            sa.select(
                e.c.purpose,
                e.c.choice,
                month.label("month"),
                sa.func.row_number()
                .over(
                    partition_by=[e.c.user_id, e.c.purpose, month],
                    order_by=[e.c.at.desc(), e.c.event_id.desc()],
                )
                .label("rank"),
            )
            .where(e.c.at >= start, e.c.at < end)
            .subquery()
        )
        monthly_rows = session.execute(
            sa.select(per_month.c.month, per_month.c.purpose, per_month.c.choice, sa.func.count())
            .where(per_month.c.rank == 1)
            .group_by(per_month.c.month, per_month.c.purpose, per_month.c.choice)
            .order_by(per_month.c.month, per_month.c.purpose, per_month.c.choice)
        ).all()
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
    monthly = [
        {
            "month": str(m),
            "purpose": purpose,
            "choice": "opted_in" if choice == "allow" else "opted_out",
            "users": int(n),
        }
        for m, purpose, choice, n in monthly_rows
    ]
    # One purpose's months add up to about its period total: the same secondary rule.
    suppress(monthly, ("purpose", "choice"))
    return {
        "small_cell_threshold": SMALL_CELL,
        "purposes": {
            p: {k: _published(v) for k, v in t.items()} for p, t in sorted(totals.items())
        },
        "cells": cells,
        "monthly": monthly,
    }


def _events_at(
    store: Store, prefixes: Sequence[str], start: datetime, end: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    conditions = [AuditEventRow.event_type.startswith(p, autoescape=True) for p in prefixes]
    query = (
        sa.select(AuditEventRow.event_type, AuditEventRow.at, AuditEventRow.payload)
        .where(sa.or_(*conditions), AuditEventRow.at >= start, AuditEventRow.at < end)
        .order_by(AuditEventRow.seq)
    )
    with store.session() as session:
        return [(t, at, json.loads(p)) for t, at, p in session.execute(query).all()]


def _events(
    store: Store, prefixes: Sequence[str], start: datetime, end: datetime
) -> list[tuple[str, dict[str, Any]]]:
    return [(t, p) for t, _, p in _events_at(store, prefixes, start, end)]


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


def confirmation_summary(
    confirmed: Sequence[tuple[datetime, datetime, datetime]],
) -> dict[str, Any]:
    """How fast revocations were confirmed, from (revoked_at, confirmed_at, due_at) rows.

    1. `confirmed`: the number of rows.
    2. `median_seconds`: the median of confirmed_at - revoked_at, in whole seconds (rounded
       half to even), or None without rows.
    3. `confirmed_by_deadline`: rows confirmed at or before their due instant.
    """
    seconds = [(c - r).total_seconds() for r, c, _ in confirmed]
    return {
        "confirmed": len(confirmed),
        "median_seconds": round(statistics.median(seconds)) if seconds else None,
        "confirmed_by_deadline": sum(1 for _, c, d in confirmed if c <= d),
    }


def _revocation_times(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Revocations issued in the period, those confirmed in it and how fast (overall and per
    month of confirmation), and those still awaiting confirmation at its end."""
    r = RevocationRow
    in_period = sa.and_(r.revoked_at >= start, r.revoked_at < end)
    waiting = sa.and_(r.revoked_at < end, sa.or_(r.confirmed_at.is_(None), r.confirmed_at >= end))
    with store.session() as session:
        issued_month = _month_of(session, r.revoked_at)
        issued: dict[str, int] = {
            str(month): int(n)
            for month, n in session.execute(
                sa.select(issued_month, sa.func.count()).where(in_period).group_by(issued_month)
            ).all()
        }
        rows = session.execute(
            sa.select(r.revoked_at, r.confirmed_at, r.due_at)
            .where(r.confirmed_at >= start, r.confirmed_at < end)
            .order_by(r.confirmed_at)
        ).all()
        awaiting, overdue = session.execute(
            sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((r.due_at < end, 1), else_=0)), 0),
            ).where(waiting)
        ).one()
    confirmed = [(a, b, c) for a, b, c in rows if b is not None]
    by_month: dict[str, list[tuple[datetime, datetime, datetime]]] = {}
    for row in confirmed:
        by_month.setdefault(row[1].astimezone(UTC).strftime("%Y-%m"), []).append(row)
    monthly = [
        {"month": m, "issued": issued.get(m, 0), **confirmation_summary(by_month.get(m, []))}
        for m in month_span([*issued, *by_month])
    ]
    return {
        "issued": sum(issued.values()),
        **confirmation_summary(confirmed),
        "awaiting": int(awaiting),
        "overdue": int(overdue),
        "monthly": monthly,
    }


def _count_values(value: Any) -> int:
    """A retention count field: an int, or a mapping of category/store -> int."""
    if isinstance(value, Mapping):
        return sum(int(v) for v in value.values())
    return int(value or 0)


def _purges(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Retention purges carried out in the period and what they removed."""
    events = _events(store, ("retention.", "hold."), start, end)
    applied = [p for t, p in events if t == "retention.applied"]
    return {
        "purges": len(applied),
        "records_deleted": sum(_count_values(p.get("deleted")) for p in applied),
        "records_anonymised": sum(_count_values(p.get("anonymised")) for p in applied),
        "verified": sum(1 for t, p in events if t == "retention.verified" and p.get("ok")),
        "holds_placed": sum(1 for t, _ in events if t == "hold.added"),
    }


def _scraping_damages(store: Store, start: datetime, end: datetime) -> dict[str, Any]:
    """Scraping assessments recorded in the period, newest first. Each re-reads the whole
    access log, so their amounts are not added up: the newest is the current finding."""
    found = [
        {
            "assessment_id": p["assessment_id"],
            "recorded_at": rfc3339(at),
            "policy_version": p["policy_version"],
            "accesses": int(p["accesses"]),
            "entities": int(p["entities"]),
            "billed_entities": int(p["billed_entities"]),
            "billed_windows": int(p["billed_windows"]),
            "total_amount": str(p["total_amount"]),
            "currency": p["currency"],
        }
        for t, at, p in _events_at(store, ("scraping.assessed",), start, end)
        if t == "scraping.assessed"
    ]
    return {"assessments": found[::-1]}


def transparency_report(
    store: Store, signer: Signer, *, start: datetime, end: datetime
) -> dict[str, Any]:
    """The report for [start, end): consent, deliveries, the event families, revocation
    times, purges, scraping damages, and a signed checkpoint of the audit log the counts
    were read from (not recorded)."""
    checkpoint = AuditLog(store).checkpoint(signer, record=False)
    return {
        "from": rfc3339(start),
        "to": rfc3339(end),
        "consent": _consent_section(store, start, end),
        "deliveries": _deliveries_section(store, start, end),
        **{key: _family_section(store, prefixes, start, end) for key, _, prefixes in FAMILIES},
        "revocation_times": _revocation_times(store, start, end),
        "purges": _purges(store, start, end),
        "scraping_damages": _scraping_damages(store, start, end),
        "log": {
            "size": checkpoint.checkpoint.size,
            "checkpoint": checkpoint.note(),
        },
    }


# --- plain words --------------------------------------------------------------------------

EVENT_TITLES: Final[dict[str, str]] = {
    "revocation.issued": "Revocation runs",
    "revocation.confirmed": "Deletion receipts from licensees",
    "retention.planned": "Purges planned",
    "retention.applied": "Purges carried out",
    "retention.verified": "Purges checked afterwards",
    "hold.added": "Legal holds placed",
    "hold.released": "Legal holds released",
    "scraping.assessed": "Scraping assessments",
    "policy.published": "Policy versions published",
}
"""What each audit event type of the report's families means, for people, in the order
the HTML report lists them."""

FIELD_LABELS: Final[dict[str, str]] = {
    "lineage_rows": "delivered records examined",
    "revoked": "records no longer allowed",
    "new": "new revocations",
    "records": "records in the receipts",
    "confirmed": "deletions confirmed",
    "already_confirmed": "confirmed before",
    "unknown": "not recognised",
    "delivery_dirs_removed": "delivery folders removed",
    "revocations": "revocations for deleted posts",
    "accesses": "accesses counted",
    "entities": "entities seen",
    "billed_entities": "entities billed",
    "billed_windows": "24-hour windows billed",
    "changes": "changes from the version before",
}
"""What each summed payload field of those event types counts, for people."""


def ordered_events(section: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """A family section's (event type, counts) in `EVENT_TITLES` order (the order things
    happen: planned, applied, verified), unknown types last by name."""
    order = {t: i for i, t in enumerate(EVENT_TITLES)}
    return sorted(section.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def event_title(event_type: str) -> str:
    """The plain title of an event type; an unknown one in words (`a.b_c` -> `A b c`)."""
    found = EVENT_TITLES.get(event_type)
    if found is not None:
        return found
    words = event_type.replace(".", " ").replace("_", " ")
    return words[:1].upper() + words[1:]


def field_label(name: str) -> str:
    """The plain label of a summed payload field; an unknown one with spaces for `_`."""
    return FIELD_LABELS.get(name, name.replace("_", " "))


def format_count(value: int | None) -> str:
    """A count with thousands separators; a suppressed one (None) as `<10`."""
    return f"<{SMALL_CELL}" if value is None else f"{value:,}"


def format_duration(seconds: float) -> str:
    """A length of time in the largest sensible unit: `45 minutes`, `5.5 hours`, `12 days`.

    1. Under an hour: whole minutes (at least 1 when not zero; `0 minutes` for zero).
    2. Under two days: hours, one decimal below 10.
    3. Otherwise days, one decimal below 10.
    """

    def amount(value: float, unit: str) -> str:
        text = f"{value:.1f}".removesuffix(".0") if value < 10 else f"{round(value):,}"
        return f"{text} {unit}" if text != "1" else f"1 {unit.removesuffix('s')}"

    if seconds < 3600:
        minutes = 0 if seconds <= 0 else max(1, round(seconds / 60))
        return f"{minutes} minute" if minutes == 1 else f"{minutes} minutes"
    if seconds < 2 * 86400:
        return amount(seconds / 3600, "hours")
    return amount(seconds / 86400, "days")


def family_details(totals: Mapping[str, Any]) -> str:
    """An event type's summed fields in words, in `FIELD_LABELS` order, e.g. `3 deletions
    confirmed, 1 not recognised`. Amounts are left out: each scraping assessment re-reads
    the whole access log, so their sum is owed by no one (the headline gives the latest
    assessment's amount)."""
    order = {name: i for i, name in enumerate(FIELD_LABELS)}
    names = sorted(totals, key=lambda n: (order.get(n, len(order)), n))
    parts = [
        f"{Decimal(str(totals[name])):,} {field_label(name)}"
        for name in names
        if "amount" not in name
    ]
    return ", ".join(parts) or "—"


def _title(titles: Mapping[str, str] | None, key: str) -> str:
    return (titles or {}).get(key, key)


def _n(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _headline_lines(report: Mapping[str, Any], titles: Mapping[str, str] | None) -> list[str]:
    out = []
    for purpose, t in report["consent"]["purposes"].items():
        people = "person" if t["opted_out"] == 1 else "people"
        out.append(
            f"- {_title(titles, purpose)}: {format_count(t['opted_out'])} {people} opted out, "
            f"{format_count(t['opted_in'])} opted in."
        )
    deliveries = report["deliveries"]
    out.append(
        f"- Deliveries: {_n(sum(d['deliveries'] for d in deliveries), 'delivery', 'deliveries')}"
        f" to {_n(len(deliveries), 'licensee', 'licensees')}, "
        f"{_n(sum(d['records'] for d in deliveries), 'record', 'records')}."
    )
    times = report["revocation_times"]
    speed = (
        f", half of them within {format_duration(times['median_seconds'])}"
        if times["median_seconds"] is not None
        else ""
    )
    out.append(
        f"- Revocations: {times['issued']:,} issued, {times['confirmed']:,} confirmed"
        f"{speed} ({times['confirmed_by_deadline']:,} by the deadline); "
        f"{times['awaiting']:,} awaiting confirmation, {times['overdue']:,} overdue."
    )
    purges = report["purges"]
    out.append(
        f"- Retention purges: {purges['purges']:,}; "
        f"{_n(purges['records_deleted'], 'record', 'records')} deleted and "
        f"{purges['records_anonymised']:,} anonymised."
    )
    assessments = report["scraping_damages"]["assessments"]
    if assessments:
        latest = assessments[0]
        of = f" (the latest of {len(assessments):,} assessments)" if len(assessments) > 1 else ""
        out.append(
            f"- Scraping damages: {format_money(latest['total_amount'], latest['currency'])} "
            f"owed by {_n(latest['billed_entities'], 'entity', 'entities')}{of}."
        )
    else:
        out.append("- Scraping damages: no assessment in this period.")
    return out


def render_markdown(report: Mapping[str, Any], titles: Mapping[str, str] | None = None) -> str:
    """The report as Markdown (the same numbers as JSON and HTML); `titles` maps purpose
    keys to the policy's titles (without it the keys are shown)."""
    out = [
        "# Transparency report",
        "",
        f"Period: {report['from']} to {report['to']} (end exclusive). Counts of people below "
        f"{SMALL_CELL} are shown as `<{SMALL_CELL}`.",
        "",
        "## Headline figures",
        "",
        *_headline_lines(report, titles),
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
            f"| {_title(titles, purpose)} | {region} | {format_count(counts.get('opted_in', 0))}"
            f" | {format_count(counts.get('opted_out', 0))} |"
        )
    if not grid:
        out.append("| — | — | 0 | 0 |")
    out += ["", "## Deliveries per licensee", "", "| licensee | purposes | deliveries | records |"]
    out.append("|---|---|---:|---:|")
    for d in report["deliveries"]:
        purposes = ", ".join(_title(titles, p) for p in d["purposes"])
        out.append(f"| {d['licensee']} | {purposes} | {d['deliveries']:,} | {d['records']:,} |")
    if not report["deliveries"]:
        out.append("| none | — | 0 | 0 |")
    for key, title, _ in FAMILIES:
        out += ["", f"## {title}", "", "| what happened | times | details |", "|---|---:|---|"]
        section = report[key]
        for event_type, data in ordered_events(section):
            details = family_details(data["totals"])
            out.append(f"| {event_title(event_type)} | {data['events']:,} | {details} |")
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
