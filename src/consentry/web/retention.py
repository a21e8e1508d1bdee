"""The admin retention page: the current plan per category (kept / to delete / held) as
inline SVG, the legal holds and the purge history. It plans only; it never applies."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from consentry import __version__
from consentry.retention import CategoryPlan, compute_plan, list_holds, purge_history
from consentry.serving.services import Services, services
from consentry.web import templates
from consentry.web.sessions import signed_in

__all__ = ["plan_chart", "processing_record_html", "router"]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]

_TONES = {"kept": "ok", "due": "bad", "held": "warn"}


def plan_chart(entry: CategoryPlan, width: int = 480) -> dict[str, Any]:
    """One category's bar: kept, due (delete or anonymise) and held, as SVG segments.

    1. `kept` counts records not due and those already anonymised; `due` what the plan
       deletes or anonymises; `held` what a legal hold keeps.
    2. The segments share `width` in proportion; a non-empty segment is at least 2 wide, so
       a handful of records among millions still shows.
    """
    kept = entry.keep + entry.done
    due = entry.delete + entry.anonymise
    held = entry.held
    total = kept + due + held
    parts = [("kept", kept), ("due", due), ("held", held)]
    widths = [max(2, round(width * n / total)) if n and total else 0 for _, n in parts]
    overflow = sum(widths) - width
    if overflow > 0 and total:
        biggest = widths.index(max(widths))
        widths[biggest] -= overflow
    segments = []
    x = 2
    labels = {"kept": "kept", "due": "to delete or anonymise", "held": "held"}
    for (name, n), w in zip(parts, widths, strict=True):
        if w:
            segments.append(
                {"x": x, "width": w, "tone": _TONES[name], "label": labels[name], "value": n}
            )
            x += w
    rule = entry.rule
    return {
        "category": entry.category,
        "rule_text": entry.rule_text,
        "gap": rule is None,
        "verb": "anonymise" if rule and rule.get("action") == "anonymise" else "delete",
        "kept": kept,
        "due": due,
        "held": held,
        "total": total,
        "width": width,
        "segments": segments,
        "explanation": entry.explanation,
    }


def _purge_rows(purges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for p in purges:
        results = p["results"] or {}
        evidence = p["evidence"]
        rows.append(
            {
                **p,
                "deleted": sum((results.get("deleted") or {}).values()),
                "anonymised": sum((results.get("anonymised") or {}).values()),
                "remaining": None if evidence is None else sum(evidence["remaining"].values()),
            }
        )
    return rows


@router.get("/admin/retention", response_class=HTMLResponse)
async def admin_retention(request: Request, svc: ServicesDep) -> Response:
    """The current retention plan, the holds and the purge history (admin session only)."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    now = datetime.now(UTC)
    plan = await run_in_threadpool(compute_plan, svc.settings, at=now, policy=svc.policy)
    holds = [h.as_dict(now) for h in list_holds(svc.store)]
    purges = _purge_rows(purge_history(svc.store))
    charts = [plan_chart(e) for e in plan.categories]
    totals = {
        "records": sum(c["total"] for c in charts),
        "due": sum(c["due"] for c in charts),
        "held": sum(c["held"] for c in charts),
        "holds": sum(1 for h in holds if h["state"] == "active"),
        "gaps": len(plan.gaps),
    }
    return templates.TemplateResponse(
        request,
        "admin_retention.html",
        {
            "version": __version__,
            "admin": admin,
            "plan": plan,
            "charts": charts,
            "holds": holds,
            "purges": purges,
            "totals": totals,
        },
    )


def processing_record_html(record: dict[str, Any]) -> str:
    """The record as a standalone HTML page (no scripts, no external assets)."""
    return templates.env.get_template("admin_retention_processing.html").render(
        record=record, escape=html.escape
    )
