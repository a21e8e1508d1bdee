"""Public pages: the transparency report (`/transparency`) and the policy history (`/policy`).

Both are readable without signing in: they hold counts (small ones suppressed) and the
policy's own text, never anything about one person.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from consentry import __version__
from consentry.audit.policy_history import published_versions, version_sha256
from consentry.audit.transparency import (
    DEFAULT_PERIOD,
    FAMILIES,
    SMALL_CELL,
    default_period,
    event_title,
    family_details,
    format_count,
    format_duration,
    latest_choice,
    month_span,
    ordered_events,
    transparency_report,
)
from consentry.errors import BadInput, Problem
from consentry.instants import parse_instant
from consentry.policy import PolicyFile, diff_versions, format_money, region_name
from consentry.serving.services import Services, services
from consentry.signing import Signer
from consentry.store import Store
from consentry.web import templates
from consentry.web.pages import error_page

__all__ = [
    "MonthChart",
    "month_chart",
    "policy_history_rows",
    "purpose_titles",
    "report_context",
    "report_period",
    "router",
]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]


def report_period(
    start: str | None,
    end: str | None,
    *,
    store: Store | None = None,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """[from, to): dates or RFC 3339 instants.

    1. A date as `to` means the end of that day; `to` defaults to now, `from` to 365 days
       before `to`.
    2. With neither given and a `store`: up to now, from 365 days ago or, when nobody has
       made a choice since, from 365 days before the last day someone did
       (`consentry.audit.transparency.default_period`).
    3. BadInput when from is not before to."""
    now = now or datetime.now(UTC)
    if not start and not end and store is not None:
        return default_period(latest_choice(store), now)
    stop = parse_instant(end, field="to") if end else now
    if end and len(end.strip()) == 10:
        stop += timedelta(days=1)
    begin = parse_instant(start, field="from") if start else stop - DEFAULT_PERIOD
    if begin >= stop:
        raise BadInput(Problem("period", None, "from", "the period's start must be before its end"))
    return begin, stop


def purpose_titles(policy: PolicyFile) -> dict[str, str]:
    """Purpose key -> the title the policy gives it (the latest version naming it wins)."""
    return {p.key: p.title for v in policy.versions for p in v.purposes}


# --- charts: inline SVG drawn from numbers, no script --------------------------------------

_W, _H = 480, 184
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 8, 14, 38
_PLOT_W, _PLOT_H = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
_MONTH_NAMES = (
    *("January", "February", "March", "April", "May", "June"),
    *("July", "August", "September", "October", "November", "December"),
)


@dataclass(frozen=True, slots=True)
class ChartBar:
    x: float
    y: float
    width: float
    height: float
    label: str
    suppressed: bool


@dataclass(frozen=True, slots=True)
class ChartText:
    x: float
    y: float
    text: str


@dataclass(frozen=True, slots=True)
class MonthChart:
    """A bar per month, drawn in a `_W` x `_H` viewBox that scales to any width."""

    title: str
    colour: str
    bars: list[ChartBar]
    months: list[ChartText]
    years: list[ChartText]
    grid: list[ChartText]
    line: ChartText | None
    width: int = _W
    height: int = _H
    left: int = _LEFT
    right: int = _W - _RIGHT
    base: int = _TOP + _PLOT_H


def _nice_top(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 x 10^k at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= value)


def _month_name(month: str, *, short: bool = False) -> str:
    name = _MONTH_NAMES[int(month[5:]) - 1]
    return f"{name[:3] if short else name} {month[:4]}"


def month_chart(
    title: str,
    series: Sequence[tuple[str, float | None]],
    *,
    colour: str,
    describe: Callable[[str, float | None], str],
    axis: Callable[[float], str],
    line: tuple[float, str] | None = None,
) -> MonthChart:
    """A monthly bar chart of `series` ((`YYYY-MM`, value or None for a suppressed count)).

    1. The scale's top is the largest value (or the reference `line`, when it is at most
       three times the largest value) rounded up to 1, 2, 2.5 or 5 x 10^k.
    2. One slot per month; a non-zero bar is at least one unit tall; a suppressed value is
       a short grey stub; `describe` gives each bar's tooltip (`<title>`).
    3. Month labels: at most one per 36 units of width, the year under the first and under
       every January.
    """
    largest = max((v for _, v in series if v), default=0.0)
    shown_line = line if line is not None and line[0] <= 3 * max(largest, 1e-9) else None
    top = _nice_top(max(largest, shown_line[0] if shown_line else 0.0))
    slot = _PLOT_W / max(len(series), 1)
    width = max(1.0, slot * 0.7)
    base = _TOP + _PLOT_H
    bars = []
    for i, (month, value) in enumerate(series):
        x = _LEFT + i * slot + (slot - width) / 2
        if value is None:
            height = 3.0  # a stub: the month has a count, too small to publish
        elif not value:
            height = 0.0
        else:
            height = max(1.0, _PLOT_H * value / top)
        bars.append(
            ChartBar(
                round(x, 1),
                round(base - height, 1),
                round(width, 1),
                round(height, 1),
                describe(month, value),
                value is None,
            )
        )
    every = max(1, math.ceil(len(series) * 36 / _PLOT_W))
    months, years = [], []
    for i, (month, _) in enumerate(series):
        centre = round(_LEFT + (i + 0.5) * slot, 1)
        if i % every == 0:
            months.append(ChartText(centre, base + 16, _MONTH_NAMES[int(month[5:]) - 1][:3]))
            if i == 0 or month.endswith("-01") or i < every:
                years.append(ChartText(centre, base + 32, month[:4]))
        elif month.endswith("-01"):
            years.append(ChartText(centre, base + 32, month[:4]))
    grid = [ChartText(_LEFT - 6, round(base - _PLOT_H * f, 1), axis(top * f)) for f in (0, 0.5, 1)]
    drawn = None
    if shown_line is not None:
        drawn = ChartText(_LEFT, round(base - _PLOT_H * shown_line[0] / top, 1), shown_line[1])
    return MonthChart(title, colour, bars, months, years, grid, drawn)


# --- the page's words ----------------------------------------------------------------------


def _n(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def _people(value: int | None) -> str:
    return f"fewer than {SMALL_CELL}" if value is None else f"{value:,}"


def _day(instant: datetime) -> str:
    return f"{instant.day} {instant:%B %Y}"


def _region(code: str) -> str:
    if code == "unknown":
        return "Not known"
    return region_name(code).removeprefix("the ")


def _share(part: int, whole: int) -> str:
    """A share in whole percent that says 100 % only when it is all, 0 % only when none."""
    if not whole:
        return "—"
    percent = round(100 * part / whole)
    if part < whole:
        percent = min(percent, 99)
    if part > 0:
        percent = max(percent, 1)
    return f"{percent} %"


def _headline(
    report: Mapping[str, Any], title: Callable[[str], str], deadline: str | None
) -> list[dict[str, Any]]:
    """The cards at the top of the report: one per purpose, then deliveries, revocations,
    purges and scraping damages."""
    cards: list[dict[str, Any]] = []
    for purpose, totals in report["consent"]["purposes"].items():
        cards.append(
            {
                "title": title(purpose),
                "figure": _people(totals["opted_out"]),
                "label": "person opted out" if totals["opted_out"] == 1 else "people opted out",
                "lines": [f"{_people(totals['opted_in'])} opted in"],
            }
        )
    if not cards:
        cards.append(
            {
                "title": "Opt-ins and opt-outs",
                "figure": "0",
                "label": "people made a choice",
                "lines": ["No one changed a setting in this period."],
            }
        )
    deliveries = report["deliveries"]
    records = sum(d["records"] for d in deliveries)
    cards.append(
        {
            "title": "Deliveries to licensees",
            "figure": f"{records:,}",
            "label": "record delivered" if records == 1 else "records delivered",
            "lines": [
                f"{_n(sum(d['deliveries'] for d in deliveries), 'delivery', 'deliveries')} to "
                f"{_n(len(deliveries), 'licensee', 'licensees')}"
            ],
        }
    )
    times = report["revocation_times"]
    lines = [f"{times['confirmed']:,} confirmed deleted by the licensee"]
    if times["median_seconds"] is not None:
        lines[0] += f", half of them within {format_duration(times['median_seconds'])}"
        by = _share(times["confirmed_by_deadline"], times["confirmed"])
        lines.append(f"{by} confirmed by the deadline" + (f" ({deadline})" if deadline else ""))
    lines.append(f"{times['awaiting']:,} awaiting confirmation, {times['overdue']:,} overdue")
    cards.append(
        {
            "title": "Revocations",
            "figure": f"{times['issued']:,}",
            "label": (
                "record licensees were told to delete"
                if times["issued"] == 1
                else "records licensees were told to delete"
            ),
            "lines": lines,
        }
    )
    purges = report["purges"]
    cards.append(
        {
            "title": "Retention purges",
            "figure": f"{purges['purges']:,}",
            "label": (
                "purge of data past its retention period"
                if purges["purges"] == 1
                else "purges of data past its retention period"
            ),
            "lines": [
                f"{_n(purges['records_deleted'], 'record', 'records')} deleted, "
                f"{purges['records_anonymised']:,} anonymised"
            ],
        }
    )
    assessments = report["scraping_damages"]["assessments"]
    if assessments:
        latest = assessments[0]
        recorded = parse_instant(latest["recorded_at"], field="recorded_at")
        cards.append(
            {
                "title": "Scraping damages",
                "figure": format_money(latest["total_amount"], latest["currency"]),
                "label": "owed for scraping beyond the terms of service",
                "lines": [
                    f"by {_n(latest['billed_entities'], 'scraper', 'scrapers')}, "
                    f"as assessed on {_day(recorded)}",
                    f"{_n(len(assessments), 'assessment', 'assessments')} in this period",
                ],
            }
        )
    else:
        cards.append(
            {
                "title": "Scraping damages",
                "figure": "None",
                "label": "no scraping assessment in this period",
                "lines": [],
            }
        )
    return cards


def _charts(
    report: Mapping[str, Any], title: Callable[[str], str], deadline: float | None
) -> dict[str, Any]:
    """Opt-outs per month (one chart per purpose) and the median time to confirm a
    revocation per month."""
    monthly = [c for c in report["consent"]["monthly"] if c["choice"] == "opted_out"]
    months = month_span([c["month"] for c in report["consent"]["monthly"]])
    opt_outs = []
    for purpose in sorted({c["purpose"] for c in monthly}, key=title):
        found = {c["month"]: c["users"] for c in monthly if c["purpose"] == purpose}
        series = [(m, found.get(m, 0)) for m in months]
        opt_outs.append(
            month_chart(
                title(purpose),
                series,
                colour="#a3221b",
                describe=lambda m, v: (
                    f"{_month_name(m)}: {_people(None if v is None else int(v))} people opted out"
                ),
                axis=lambda v: f"{v:,.0f}" if v >= 10 or v == 0 else f"{v:g}",
            )
        )
    times = report["revocation_times"]["monthly"]
    confirmations = None
    if any(t["confirmed"] for t in times):
        longest = max(t["median_seconds"] or 0 for t in times)
        in_days = max(longest, deadline or 0) >= 2 * 86400
        unit = 86400.0 if in_days else 3600.0
        confirmations = month_chart(
            f"Median time to confirm a revocation, in {'days' if in_days else 'hours'}",
            [(t["month"], (t["median_seconds"] or 0) / unit) for t in times],
            colour="#0b57d0",
            describe=lambda m, v: next(
                (
                    f"{_month_name(m)}: {_n(t['confirmed'], 'revocation', 'revocations')} "
                    "confirmed"
                    + (
                        f", half within {format_duration(t['median_seconds'])}"
                        if t["median_seconds"] is not None
                        else ""
                    )
                )
                for t in times
                if t["month"] == m
            ),
            axis=lambda v: f"{v:g}",
            line=(deadline / unit, f"deadline, {format_duration(deadline)}") if deadline else None,
        )
    return {"opt_outs": opt_outs, "confirmations": confirmations}


def report_context(report: dict[str, Any], policy: PolicyFile | None = None) -> dict[str, Any]:
    """What `_transparency_body.html` needs besides the report itself: every figure in
    words (the policy's purpose titles, money with its currency, thousands separators)."""
    titles = purpose_titles(policy) if policy is not None else {}

    def title(key: str) -> str:
        return titles.get(key, key)

    start = parse_instant(report["from"], field="from")
    end = parse_instant(report["to"], field="to")
    sla = policy.revocation_sla_at(end - timedelta(microseconds=1)) if policy else None
    deadline_seconds = (
        float(sla.total_seconds()) if sla is not None and not sla.has_calendar_parts else None
    )
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in report["consent"]["cells"]:
        row = rows.setdefault(
            (title(cell["purpose"]), _region(cell["region"])),
            {
                "purpose": title(cell["purpose"]),
                "region": _region(cell["region"]),
                "opted_in": "0",
                "opted_out": "0",
            },
        )
        row[cell["choice"]] = format_count(cell["users"])
    monthly: dict[tuple[str, str], dict[str, str]] = {}
    for cell in report["consent"]["monthly"]:
        row = monthly.setdefault(
            (cell["month"], title(cell["purpose"])),
            {
                "month": _month_name(cell["month"]),
                "purpose": title(cell["purpose"]),
                "opted_in": "0",
                "opted_out": "0",
            },
        )
        row[cell["choice"]] = format_count(cell["users"])
    return {
        "report": report,
        "threshold": SMALL_CELL,
        "period": {
            "from": _day(start),
            "to": _day(end - timedelta(microseconds=1)),
        },
        "headline": _headline(report, title, sla.describe() if sla is not None else None),
        "charts": _charts(report, title, deadline_seconds),
        "consent_rows": [rows[k] for k in sorted(rows)],
        "monthly_rows": [monthly[k] for k in sorted(monthly)],
        "delivery_rows": [
            {
                "licensee": d["licensee"],
                "purposes": ", ".join(title(p) for p in d["purposes"]),
                "deliveries": f"{d['deliveries']:,}",
                "records": f"{d['records']:,}",
            }
            for d in report["deliveries"]
        ],
        "revocation_rows": [
            {
                "month": _month_name(t["month"]),
                "issued": f"{t['issued']:,}",
                "confirmed": f"{t['confirmed']:,}",
                "median": (
                    format_duration(t["median_seconds"]) if t["median_seconds"] is not None else "—"
                ),
                "by_deadline": _share(t["confirmed_by_deadline"], t["confirmed"]),
            }
            for t in report["revocation_times"]["monthly"]
        ],
        "assessment_rows": [
            {
                "recorded": _day(parse_instant(a["recorded_at"], field="recorded_at")),
                "accesses": f"{a['accesses']:,}",
                "entities": f"{a['entities']:,}",
                "billed": f"{a['billed_entities']:,}",
                "windows": f"{a['billed_windows']:,}",
                "amount": format_money(a["total_amount"], a["currency"]),
            }
            for a in report["scraping_damages"]["assessments"]
        ],
        "families": [
            {
                "key": key,
                "title": family_title,
                "rows": [
                    {
                        "title": event_title(event_type),
                        "events": f"{data['events']:,}",
                        "details": family_details(data["totals"]),
                    }
                    for event_type, data in ordered_events(report[key])
                ],
            }
            for key, family_title, _ in FAMILIES
        ],
        "version": __version__,
    }


def policy_history_rows(policy: PolicyFile, store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every version, oldest first, with its audit record and the link to its changes."""
    published = published_versions(store)
    current = policy.version_at(now)
    rows = []
    previous = None
    for v in policy.versions:
        record = published.get(v.version)
        rows.append(
            {
                "version": v.version,
                "effective": v.effective_from.strftime("%-d %B %Y, %H:%M UTC"),
                "current": current is not None and current.version == v.version,
                "future": v.effective_from > now,
                "purposes": [p.title for p in v.purposes],
                "previous": previous.version if previous else None,
                "changes": len(diff_versions(previous, v)) if previous else 0,
                "published": record.published_at.strftime("%-d %B %Y") if record else None,
                "event_id": record.event_id if record else None,
                "sha256": version_sha256(v),
            }
        )
        previous = v
    return rows


@router.get("/transparency", response_class=HTMLResponse)
def transparency_page(
    request: Request,
    svc: ServicesDep,
    start: Annotated[str | None, Query(alias="from")] = None,
    end: Annotated[str | None, Query(alias="to")] = None,
) -> Response:
    """The public transparency report for a period (default: see `report_period`)."""
    try:
        begin, stop = report_period(start or None, end or None, store=svc.store)
    except BadInput as exc:
        return error_page(
            request,
            422,
            "That period is not valid",
            "; ".join(p.message for p in exc.problems),
            link=("/transparency", "Back to the transparency report"),
        )
    report = transparency_report(svc.store, Signer.from_keyring(svc.keyring), start=begin, end=stop)
    context = report_context(report, svc.policy)
    # Say so when the default reached back past a year (see `default_period`).
    context["reached_back"] = not start and not end and stop - begin > DEFAULT_PERIOD
    context["from_value"] = begin.strftime("%Y-%m-%d")
    context["to_value"] = (stop - timedelta(microseconds=1)).strftime("%Y-%m-%d")
    return templates.TemplateResponse(request, "transparency.html", context)


@router.get("/policy", response_class=HTMLResponse)
def policy_history(request: Request, svc: ServicesDep) -> Response:
    """Every policy version with its effective date and a link to what changed."""
    return templates.TemplateResponse(
        request,
        "policy_history.html",
        {
            "version": __version__,
            "platform": svc.policy.platform,
            "versions": policy_history_rows(svc.policy, svc.store, datetime.now(UTC)),
        },
    )
