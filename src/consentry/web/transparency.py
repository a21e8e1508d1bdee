"""Public pages: the transparency report (`/transparency`) and the policy history (`/policy`).

Both are readable without signing in: they hold counts (small ones suppressed) and the
policy's own text, never anything about one person.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from consentry import __version__
from consentry.audit.policy_history import published_versions, version_sha256
from consentry.audit.transparency import FAMILIES, SMALL_CELL, chart_rows, transparency_report
from consentry.errors import BadInput, Problem
from consentry.instants import parse_instant
from consentry.policy import PolicyFile, diff_versions
from consentry.serving.services import Services, services
from consentry.signing import Signer
from consentry.store import Store
from consentry.web import templates
from consentry.web.pages import error_page

__all__ = ["policy_history_rows", "report_context", "report_period", "router"]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]
DEFAULT_PERIOD = timedelta(days=365)
"""Without `from`, the report covers the year up to `to`."""


def report_period(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[from, to): dates or RFC 3339 instants; defaults: the last 365 days up to now.

    A date as `to` means the end of that day. BadInput when from is not before to."""
    stop = parse_instant(end, field="to") if end else datetime.now(UTC)
    if end and len(end.strip()) == 10:
        stop += timedelta(days=1)
    begin = parse_instant(start, field="from") if start else stop - DEFAULT_PERIOD
    if begin >= stop:
        raise BadInput(Problem("period", None, "from", "the period's start must be before its end"))
    return begin, stop


def report_context(report: dict[str, Any]) -> dict[str, Any]:
    """What `_transparency_body.html` needs besides the report itself."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for cell in report["consent"]["cells"]:
        row = rows.setdefault(
            (cell["purpose"], cell["region"]),
            {
                "purpose": cell["purpose"],
                "region": cell["region"],
                "opted_in": "0",
                "opted_out": "0",
            },
        )
        value = cell["users"]
        row[cell["choice"]] = f"<{SMALL_CELL}" if value is None else f"{value:,}"
    return {
        "report": report,
        "threshold": SMALL_CELL,
        "charts": chart_rows(report),
        "consent_rows": [rows[k] for k in sorted(rows)],
        "families": [(key, title) for key, title, _ in FAMILIES],
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
    """The public transparency report for a period (default: the last year)."""
    try:
        begin, stop = report_period(start or None, end or None)
    except BadInput as exc:
        return error_page(
            request,
            422,
            "That period is not valid",
            "; ".join(p.message for p in exc.problems),
            link=("/transparency", "Back to the transparency report"),
        )
    report = transparency_report(svc.store, Signer.from_keyring(svc.keyring), start=begin, end=stop)
    context = report_context(report)
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
