"""Admin pages for scraping: entities ranked by their densest window, evidence, live meter."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from consentry import __version__
from consentry.instants import rfc3339
from consentry.policy import format_money
from consentry.scraping.evidence import safe_name
from consentry.scraping.meter import MemoryMeter
from consentry.scraping.results import from_us
from consentry.scraping.service import latest_assessment, scraping_dir
from consentry.serving.services import Services, meter_of, services
from consentry.web import templates
from consentry.web.pages import error_page
from consentry.web.sessions import signed_in

__all__ = ["EVIDENCE_CSP", "EVIDENCE_FILES", "minute", "router", "sparkline"]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]
EVIDENCE_FILES = ("report.html", "report.pdf", "chart.png", "events.parquet", "evidence.json")
"""Files of an evidence pack the console serves."""
EVIDENCE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"
)
"""The evidence files' Content-Security-Policy: the report's own inline styles and its chart,
nothing else (no script at all)."""


def sparkline(
    series: list[int], threshold: int, width: int = 240, height: int = 40
) -> dict[str, Any]:
    """SVG polyline points for `series`, scaled so the threshold line is visible.

    1. The vertical scale tops out at max(series, threshold) x 1.05.
    2. Points are spread evenly over `width`; y grows downwards (SVG).
    """
    top = max(max(series, default=0), threshold) * 1.05 or 1.0
    n = max(len(series) - 1, 1)
    points = " ".join(
        f"{i * width / n:.1f},{height - v * height / top:.1f}" for i, v in enumerate(series)
    )
    return {
        "points": points,
        "threshold_y": round(height - threshold * height / top, 1),
        "width": width,
        "height": height,
        "over": max(series, default=0) > threshold,
    }


def minute(instant: str | datetime) -> str:
    """An instant (RFC 3339 text or a datetime) as the console shows it: `2025-03-05 02:00 UTC`.

    Seconds and their fractions are left out (truncated, not rounded): the sparklines and the
    windows are read at the hour; the exact instants are in the evidence pack."""
    at = instant if isinstance(instant, datetime) else datetime.fromisoformat(instant)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@router.get("/admin/scraping", response_class=HTMLResponse)
def admin_scraping(request: Request, svc: ServicesDep) -> Response:
    """The latest recorded assessment: entities ranked by their densest window."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    latest = latest_assessment(svc.settings)
    rows: list[dict[str, Any]] = []
    facts: dict[str, Any] = {}
    if latest is not None:
        summary = latest["summary"]
        threshold = int(summary["threshold_posts"])
        currency = latest["currency"]
        for e in summary["top"]:
            pack = scraping_dir(svc.settings) / "evidence" / safe_name(e["entity"])
            billed = len(e["windows"])
            rows.append(
                {
                    **e,
                    "spark": sparkline(e.get("series", []), threshold),
                    "evidence": (pack / "report.html").is_file(),
                    "slug": safe_name(e["entity"]),
                    "billed": billed,
                    "amount_text": format_money(e["amount"], currency) if billed else "—",
                    "from_text": minute(e["max_window_start"]),
                }
            )
        facts = {
            "assessed_at": minute(latest["assessed_at"]),
            "total": format_money(latest["total_amount"], currency),
            "window_hours": int(summary["window_seconds"]) // 3600,
            "series_from": minute(summary["series_from"]) if summary.get("series_from") else None,
            "missing_evidence": any(r["billed"] and not r["evidence"] for r in rows),
        }
    return templates.TemplateResponse(
        request,
        "admin_scraping.html",
        {"version": __version__, "admin": admin, "latest": latest, "rows": rows, "facts": facts},
    )


@router.get("/admin/scraping/evidence/{slug}/{name}")
def admin_evidence_file(request: Request, svc: ServicesDep, slug: str, name: str) -> Response:
    """A file of an evidence pack written by `consentry scraping evidence`.

    The pack's report.html is a standalone document with its own inline styles: it is
    served under a policy of its own (`EVIDENCE_CSP`)."""
    if signed_in(request, "admin") is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    if slug != safe_name(slug) or name not in EVIDENCE_FILES:
        return error_page(request, 404, "No such evidence", "Check the link.")
    path: Path = scraping_dir(svc.settings) / "evidence" / slug / name
    if not path.is_file():
        return error_page(
            request,
            404,
            "No evidence pack yet",
            "Write it with `consentry scraping evidence ENTITY`.",
            link=("/admin/scraping", "Back to scraping"),
        )
    return FileResponse(path, headers={"Content-Security-Policy": EVIDENCE_CSP})


@router.get("/admin/meter", response_class=HTMLResponse)
def admin_meter(request: Request) -> Response:
    """Live charts of the online meter (the page polls /admin/meter/data)."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    return templates.TemplateResponse(
        request, "admin_meter.html", {"version": __version__, "admin": admin}
    )


@router.get("/admin/meter/data")
def admin_meter_data(request: Request, svc: ServicesDep) -> Response:
    """The meter's current bounds (top entities) and alerts, for the live page."""
    if signed_in(request, "admin") is None:
        return JSONResponse({"error": "sign in as admin"}, status.HTTP_401_UNAUTHORIZED)
    meter = meter_of(request, svc)
    backend = meter.backend
    names: list[str]
    if isinstance(backend, MemoryMeter):
        names = backend.entities()
    else:
        names = sorted({a.entity for a in meter.alerts()})
    bounds = [b for b in (meter.bounds(n) for n in names) if b is not None]
    bounds.sort(key=lambda b: (-b.upper, b.entity))
    return JSONResponse(
        {
            "threshold_posts": meter.terms.threshold,
            "events": meter.events,
            "entities": [
                {
                    "entity": b.entity,
                    "latest": rfc3339(from_us(b.latest_us)),
                    "lower": b.lower,
                    "upper": b.upper,
                }
                for b in bounds[:12]
            ],
            "alerts": [a.to_json() for a in meter.alerts()][-50:],
        }
    )
