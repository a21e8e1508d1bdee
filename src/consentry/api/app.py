"""The FastAPI application: JSON API under /v1, pages, health, and the OpenAPI docs.

Swagger UI is served from assets shipped in the `swagger-ui-bundle` package, never a CDN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from consentry import __version__
from consentry.api import consent as consent_api
from consentry.api import signals as signals_api
from consentry.api.overview import Overview, collect_overview
from consentry.api.services import Services
from consentry.cli.common import to_jsonable
from consentry.policy import describe_purpose
from consentry.settings import Settings
from consentry.web import STATIC_DIR, pages, templates
from consentry.web import admin as admin_pages

__all__ = ["app_from_env", "create_app"]


def _sentence(text: str) -> str:
    """First letter up, full stop at the end; the rest as written (EU stays EU)."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _overview_json(overview: Overview) -> dict[str, Any]:
    policy = overview.policy
    return {
        "home": overview.home,
        "engine": overview.engine,
        "policy_file": overview.policy_file,
        "policy_version": policy.version if policy else None,
        "purposes": [p.key for p in policy.purposes] if policy else [],
        "tables": overview.tables,
        "store": to_jsonable(
            {
                "backend": overview.store.backend,
                "url": overview.store.url,
                "revision": overview.store.revision,
                "reachable": overview.store.reachable,
            }
        ),
    }


def create_app(settings: Settings) -> FastAPI:
    """Build the service for one Consentry home."""
    app = FastAPI(
        title="Consentry",
        version=__version__,
        description="Consent ledger, licensed deliveries, revocations, retention and scraping "
        "enforcement for a social platform's posts.",
        docs_url=None,
        redoc_url=None,
    )
    svc = Services.build(settings)
    app.state.settings = settings
    app.state.services = svc
    app.add_middleware(
        SessionMiddleware,
        secret_key=svc.keyring.session_secret.hex(),
        session_cookie="consentry_session",
        same_site="lax",
        https_only=False,
        max_age=14 * 24 * 3600,
    )
    app.include_router(consent_api.router)
    app.include_router(signals_api.router)
    app.include_router(pages.router)
    app.include_router(admin_pages.router)
    # --- capability routers, one line each ---
    # revocations (issue 5)
    from consentry.api.licensee import router as revocations_router

    app.include_router(revocations_router)
    # retention (issue 6)
    from consentry.web import retention as retention_pages

    app.include_router(retention_pages.router)
    # scraping (issue 7)
    from consentry.api import meter as meter_api
    from consentry.web import scraping as scraping_pages

    app.include_router(meter_api.router)
    app.include_router(scraping_pages.router)
    # audit (issue 8)
    from consentry.api import audit as audit_api
    from consentry.web import transparency as transparency_pages

    app.include_router(audit_api.router)
    app.include_router(transparency_pages.router)
    # The more specific mount first: /static would otherwise shadow /static/swagger.
    app.mount(
        "/static/swagger",
        StaticFiles(directory=str(Path(swagger_ui_bundle.swagger_ui_path))),
        name="swagger",
    )
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/docs", include_in_schema=False)
    def swagger_docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Consentry API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )

    @app.get("/healthz", tags=["system"], summary="Liveness and store reachability")
    def healthz() -> JSONResponse:
        overview = collect_overview(settings)
        ok = overview.store.reachable
        return JSONResponse(
            {
                "status": "ok" if ok else "degraded",
                "store": overview.store.backend,
                "store_reachable": ok,
                "lake_tables": len(overview.tables),
                "version": __version__,
            },
            status_code=200 if ok else 503,
        )

    @app.get("/v1/status", tags=["system"], summary="What this home holds")
    def status() -> dict[str, Any]:
        return _overview_json(collect_overview(settings))

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        overview = collect_overview(settings)
        policy = overview.policy
        purposes = [
            {
                "key": p.key,
                "title": p.title,
                "description": p.description,
                "default_words": _sentence(describe_purpose(p)),
            }
            for p in (policy.purposes if policy else [])
        ]
        return templates.TemplateResponse(
            request,
            "home.html",
            {
                "version": __version__,
                "home": overview.home,
                "engine": overview.engine,
                "policy_file": overview.policy_file,
                "policy": (
                    {
                        "version": policy.version,
                        "effective_from": to_jsonable(policy.effective_from),
                        "purposes": purposes,
                    }
                    if policy
                    else None
                ),
                "tables": sorted(overview.tables.items()),
                "store": {
                    "backend": overview.store.backend,
                    "revision": overview.store.revision,
                },
                "imports": overview.imports,
            },
        )

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (used by `consentry serve` with several workers)."""
    return create_app(Settings.from_env())
