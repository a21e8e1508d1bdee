"""Pages for revocations: the user's recipients (/settings/privacy/recipients) and the
admin's per-licensee view (/admin/revocations, /admin/revocations/{name})."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consentry import __version__
from consentry.delivery.licensees import registry_for
from consentry.instants import rfc3339
from consentry.revocation import RevocationLog, licensee_overview, recipients_of
from consentry.serving.services import Services, services
from consentry.web import templates
from consentry.web.pages import csrf_token, error_page
from consentry.web.sessions import signed_in

__all__ = ["day_bars", "router"]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]

CHART_HEIGHT = 120
CHART_BAR = 8


def day_bars(series: list[dict[str, Any]], height: int = CHART_HEIGHT) -> list[dict[str, Any]]:
    """Per day, a revoked bar and a confirmed bar, scaled so the largest is `height` tall.

    1. Days keep their order; each takes 2 bars of CHART_BAR plus a gap of CHART_BAR / 2.
    2. A non-zero count is at least 1 tall; zero is 0 tall.
    """
    top = max((max(d["revoked"], d["confirmed"]) for d in series), default=0) or 1
    step = 2 * CHART_BAR + CHART_BAR // 2

    def tall(n: int) -> int:
        return max(1, round(height * n / top)) if n else 0

    return [
        {
            "day": d["day"],
            "x": i * step,
            "revoked": d["revoked"],
            "confirmed": d["confirmed"],
            "revoked_h": tall(d["revoked"]),
            "confirmed_h": tall(d["confirmed"]),
        }
        for i, d in enumerate(series)
    ]


@router.get("/settings/privacy/recipients", response_class=HTMLResponse)
def recipients_page(request: Request, svc: ServicesDep) -> Response:
    """Who received the signed-in user's posts, when, how many, for what; revocations."""
    user_id = signed_in(request, "user")
    if user_id is None:
        return RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)
    now = datetime.now(UTC)
    recipients = recipients_of(svc.settings, svc.store, svc.policy, user_id, now=now)
    titles = {p.key: p.title for v in svc.policy.versions for p in v.purposes}
    for entry in recipients:
        entry["purpose_title"] = titles.get(entry["purpose"], entry["purpose"])
        entry["first_day"] = entry["first_delivered_at"][:10]
        entry["last_day"] = entry["last_delivered_at"][:10]
    return templates.TemplateResponse(
        request,
        "recipients.html",
        {
            "version": __version__,
            "user": user_id,
            "recipients": recipients,
            "at": rfc3339(now),
            "csrf": csrf_token(request),
        },
    )


@router.get("/admin/revocations", response_class=HTMLResponse)
def admin_revocations(request: Request, svc: ServicesDep) -> Response:
    """Every licensee with its revocation counts, linking to its page."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    now = datetime.now(UTC)
    registry = registry_for(svc.settings, policy=svc.policy)
    try:
        records = registry.licensees()
    finally:
        registry.store.close()
    log = RevocationLog(svc.store, svc.policy)
    counts = [(r, log.counts(r.id, now)) for r in records]
    rows = [{"name": r.name, "active": r.active, **c} for r, c in counts]
    kinds = ("revoked", "pending", "overdue", "confirmed")
    totals = {k: sum(c[k] for _, c in counts) for k in kinds}
    return templates.TemplateResponse(
        request,
        "revocations_admin.html",
        {
            "version": __version__,
            "admin": admin,
            "licensees": rows,
            "totals": totals,
            "at": rfc3339(now),
        },
    )


@router.get("/admin/revocations/{name}", response_class=HTMLResponse)
def admin_licensee_revocations(name: str, request: Request, svc: ServicesDep) -> Response:
    """One licensee: delivered, revoked, confirmed, overdue, a chart of the last 30 days."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    registry = registry_for(svc.settings, policy=svc.policy)
    try:
        record = registry.find(name)
    finally:
        registry.store.close()
    if record is None:
        return error_page(
            request,
            status.HTTP_404_NOT_FOUND,
            "No such licensee",
            f"There is no licensee {name!r}.",
            link=("/admin/revocations", "Back to revocations"),
        )
    overview = licensee_overview(svc.settings, svc.store, svc.policy, record)
    bars = day_bars(overview["series"])
    return templates.TemplateResponse(
        request,
        "revocations_licensee.html",
        {
            "version": __version__,
            "admin": admin,
            "o": overview,
            "bars": bars,
            "chart_height": CHART_HEIGHT,
            "chart_width": len(bars) * (2 * CHART_BAR + CHART_BAR // 2),
            "bar": CHART_BAR,
        },
    )
