"""The admin console: sign in with an admin token (the session ends when the token expires);
licensees and deliveries at a glance."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from consentry import __version__
from consentry.delivery.eligibility import REASON_ORDER
from consentry.delivery.licensees import registry_for
from consentry.delivery.service import list_deliveries
from consentry.serving.auth import InvalidTokenError, verify_token
from consentry.serving.services import Services, services
from consentry.web import templates
from consentry.web.pages import csrf_ok, csrf_token, error_page
from consentry.web.sessions import open_session, signed_in

__all__ = ["exclusion_bars", "router"]

router = APIRouter(include_in_schema=False)
ServicesDep = Annotated[Services, Depends(services)]


def exclusion_bars(counts: dict[str, Any], width: int = 360) -> list[dict[str, Any]]:
    """Bars for the delivered posts and each exclusion reason, scaled to the largest.

    1. Reasons come in the order the checks run (REASON_ORDER), not the manifest file's key
       order (manifest.json is written with sorted keys); reasons with no posts are left out.
    2. The largest bar is `width` wide (the chart's scale); a non-zero bar is at least 1 wide.
    3. The delivered bar's tone is `ok`, every exclusion's `bad`.
    """
    excluded = counts["excluded"]
    order = [r.value for r in REASON_ORDER] + sorted(
        set(excluded) - {r.value for r in REASON_ORDER}
    )
    rows = [("delivered", int(counts["delivered"]))] + [
        (reason, int(excluded[reason])) for reason in order if excluded.get(reason)
    ]
    top = max((n for _, n in rows), default=0) or 1
    return [
        {
            "label": label,
            "value": n,
            "width": max(1, round(width * n / top)) if n else 0,
            "tone": "ok" if label == "delivered" else "bad",
        }
        for label, n in rows
    ]


@router.get("/admin/signin", response_class=HTMLResponse)
def admin_signin_page(request: Request) -> Response:
    return templates.TemplateResponse(
        request, "admin_signin.html", {"version": __version__, "csrf": csrf_token(request)}
    )


@router.post("/admin/signin")
def admin_signin(
    request: Request,
    svc: ServicesDep,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
) -> Response:
    """Exchange an admin token (`consentry token admin`) for an admin session, which ends
    when the token expires (or sooner, see `consentry.web.sessions`)."""
    back = ("/admin/signin", "Back to admin sign-in")
    if not csrf_ok(request, csrf):
        return error_page(
            request, 403, "The form expired", "Reload the sign-in page and try again.", link=back
        )
    try:
        identity = verify_token(svc.keyring.platform_secret, token.strip())
    except InvalidTokenError as exc:
        # Why, in words (`InvalidTokenError.reason`), never the JWT library's message.
        return error_page(
            request,
            401,
            "That token was not accepted",
            f"That admin token is not valid: {exc.reason}.",
            link=back,
        )
    if identity.role != "admin":
        return error_page(
            request,
            403,
            "Not an admin token",
            "That token is a user's token: it opens only that user's own settings. Sign in "
            "here with an admin token from `consentry token admin`.",
            link=back,
        )
    if not open_session(request, identity.subject, "admin", expires_at=identity.expires_at):
        return error_page(
            request,
            401,
            "That token has expired",
            "That admin token is not valid: it has just expired. Issue a new one with "
            "`consentry token admin`.",
            link=back,
        )
    return RedirectResponse("/admin/deliveries", status.HTTP_303_SEE_OTHER)


@router.get("/admin/deliveries", response_class=HTMLResponse)
def admin_deliveries(request: Request, svc: ServicesDep) -> Response:
    """Licensees and their deliveries, each with its exclusion breakdown as a chart."""
    admin = signed_in(request, "admin")
    if admin is None:
        return RedirectResponse("/admin/signin", status.HTTP_303_SEE_OTHER)
    registry = registry_for(svc.settings, policy=svc.policy)
    try:
        licensees = [r.as_dict() for r in registry.licensees()]
    finally:
        registry.store.close()
    deliveries = [{**m, "bars": exclusion_bars(m["counts"])} for m in list_deliveries(svc.settings)]
    totals = {
        "licensees": len(licensees),
        "active": sum(1 for r in licensees if r["active"]),
        "deliveries": len(deliveries),
        "delivered": sum(int(d["counts"]["delivered"]) for d in deliveries),
    }
    return templates.TemplateResponse(
        request,
        "admin_deliveries.html",
        {
            "version": __version__,
            "admin": admin,
            "licensees": licensees,
            "deliveries": deliveries,
            "totals": totals,
        },
    )
