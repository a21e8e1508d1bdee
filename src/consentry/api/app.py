"""The FastAPI application: JSON API under /v1, pages, health, and the OpenAPI docs.

Swagger UI (5, which reads OpenAPI 3.1) is served from assets shipped in the
`fastapi-offline` package, never a CDN. Every response carries the security headers of
`consentry.api.headers` and a request id (`consentry.api.observability`); every refusal is a
problem (`consentry.serving.problems`), or a page for a browser (`consentry.web.errors`); what
this home is made of (its paths, its database URL) is shown only to admins.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated, Any

import fastapi_offline
from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.sessions import SessionMiddleware

from consentry import __version__
from consentry.api import consent as consent_api
from consentry.api import consent_fast
from consentry.api import public_signals as public_signals_api
from consentry.api import signals as signals_api
from consentry.api.headers import PagesOnly, SecurityHeadersMiddleware
from consentry.api.observability import RequestObserver
from consentry.api.observability import router as observability_router
from consentry.api.overview import Overview, collect_overview
from consentry.api.validation import single_query_values
from consentry.jsonable import to_jsonable
from consentry.observe.logs import configure_logging
from consentry.policy import describe_purpose
from consentry.serving.auth import Identity
from consentry.serving.problems import error_responses, install_problem_handlers, problem_openapi
from consentry.serving.services import Services, optional_bearer_identity
from consentry.settings import Settings
from consentry.web import STATIC_DIR, pages, templates
from consentry.web import admin as admin_pages
from consentry.web.errors import problem_page
from consentry.web.sessions import SESSION_LIFETIME, signed_in

__all__ = ["app_from_env", "create_app"]


def _sentence(text: str) -> str:
    """First letter up, full stop at the end; the rest as written (EU stays EU)."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


class StoreStatusView(BaseModel):
    backend: str
    revision: str | None
    reachable: bool
    url: str | None = Field(None, description="The database URL (admins only).")


class StatusView(BaseModel):
    """What this home holds. `home`, `policy_file` and `store.url` are internal: they are
    only in an admin's answer."""

    engine: str
    policy_version: str | None
    purposes: list[str]
    tables: dict[str, int]
    store: StoreStatusView
    home: str | None = Field(None, description="The state directory (admins only).")
    policy_file: str | None = Field(None, description="The policy file (admins only).")


class HealthView(BaseModel):
    status: str = Field(description="`ok`, or `degraded` when the store cannot be reached.")
    store: str
    store_reachable: bool
    lake_tables: int
    version: str


def _status(overview: Overview, *, internal: bool) -> StatusView:
    """The overview as `/v1/status` shows it; `internal` adds the home's paths and URL."""
    policy = overview.policy
    store = StoreStatusView(
        backend=overview.store.backend,
        revision=overview.store.revision,
        reachable=overview.store.reachable,
    )
    view = StatusView(
        engine=overview.engine,
        policy_version=policy.version if policy else None,
        purposes=[p.key for p in policy.purposes] if policy else [],
        tables=overview.tables,
        store=store,
    )
    if internal:
        store.url = overview.store.url
        view.home = overview.home
        view.policy_file = overview.policy_file
    return view


def create_app(settings: Settings) -> FastAPI:
    """Build the service for one Consentry home."""
    app = FastAPI(
        title="Consentry",
        version=__version__,
        description="Consent ledger, licensed deliveries, revocations, retention and scraping "
        "enforcement for a social platform's posts.",
        docs_url=None,
        redoc_url=None,
        # A parameter given twice is refused on every route, API and page alike.
        dependencies=[Depends(single_query_values)],
        # operationId = the route function's name (`change_consent`): what generated
        # clients name their calls.
        generate_unique_id_function=lambda route: route.name,
        # Metrics and logs are ours (consentry.observe); FastAPI's own OpenTelemetry hooks
        # would look for configured providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    svc = Services.build(settings)
    app.state.settings = settings
    app.state.services = svc
    app.add_middleware(
        PagesOnly,
        inner=SessionMiddleware,
        secret_key=svc.keyring.session_secret.hex(),
        session_cookie="consentry_session",
        same_site="lax",
        https_only=False,
        max_age=int(SESSION_LIFETIME.total_seconds()),
    )
    # Inside the observer and the security headers: the public signals' GET and HEAD skip
    # the routing, the dependencies and the inner middleware (docs/signals.md, "Speed").
    app.add_middleware(public_signals_api.PublicSignalsFastPath, services=svc)
    # Likewise a user's consent GET and PUT (consentry.api.consent_fast; docs/benchmarks.md).
    app.add_middleware(consent_fast.ConsentFastPath, services=svc)
    # Added last, so outermost: the observer sees every answer (its 500s included) and the
    # security headers go on every one of them.
    app.add_middleware(RequestObserver)
    app.add_middleware(SecurityHeadersMiddleware)
    install_problem_handlers(app, problem_page)
    _document_problems(app)
    app.include_router(observability_router)
    app.include_router(consent_api.router)
    app.include_router(signals_api.router)
    app.include_router(public_signals_api.router)
    app.include_router(pages.router)
    app.include_router(admin_pages.router)
    # --- capability routers, one line each ---
    # revocations
    from consentry.api.licensee import router as revocations_router

    app.include_router(revocations_router)
    # retention
    from consentry.web import retention as retention_pages

    app.include_router(retention_pages.router)
    # scraping
    from consentry.api import meter as meter_api
    from consentry.web import scraping as scraping_pages

    app.include_router(meter_api.router)
    app.include_router(scraping_pages.router)
    # audit
    from consentry.api import audit as audit_api
    from consentry.web import transparency as transparency_pages

    app.include_router(audit_api.router)
    from consentry.api import tiles as tiles_api

    app.include_router(tiles_api.router)
    app.include_router(transparency_pages.router)
    # The more specific mount first: /static would otherwise shadow /static/swagger.
    app.mount(
        "/static/swagger",
        StaticFiles(directory=str(Path(fastapi_offline.__file__).parent / "static")),
        name="swagger",
    )
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        # What browsers ask for by themselves (a page without <link rel=icon>, a bookmark,
        # a tab): the site's SVG icon, which they read whatever the path's extension says.
        return FileResponse(
            STATIC_DIR / "favicon.svg",
            media_type="image/svg+xml",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/docs", include_in_schema=False)
    def swagger_docs(request: Request) -> Response:
        # Swagger UI started by a static script (swagger-init.js), never an inline one.
        return templates.TemplateResponse(request, "swagger.html", {})

    @app.get(
        "/healthz",
        tags=["system"],
        summary="Liveness and store reachability",
        response_model=HealthView,
        responses={503: {"model": HealthView, "description": "The store cannot be reached."}},
    )
    def healthz() -> JSONResponse:
        overview = collect_overview(settings)
        ok = overview.store.reachable
        health = HealthView(
            status="ok" if ok else "degraded",
            store=overview.store.backend,
            store_reachable=ok,
            lake_tables=len(overview.tables),
            version=__version__,
        )
        return JSONResponse(health.model_dump(), status_code=200 if ok else 503)

    @app.get(
        "/v1/status",
        tags=["system"],
        summary="What this home holds (its paths and database URL: admins only)",
        response_model=StatusView,
        response_model_exclude_unset=True,
        responses=error_responses(401),
        # The token is optional: anyone may ask; only an admin's answer is complete.
        openapi_extra={"security": [{}]},
    )
    def status(
        identity: Annotated[Identity | None, Depends(optional_bearer_identity)],
    ) -> StatusView:
        internal = identity is not None and identity.role == "admin"
        return _status(collect_overview(settings), internal=internal)

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
        # The home's paths and import origins are internal: an admin session sees them.
        internal = signed_in(request, "admin") is not None
        return templates.TemplateResponse(
            request,
            "home.html",
            {
                "version": __version__,
                "internal": internal,
                "home": overview.home if internal else None,
                "engine": overview.engine,
                "policy_file": overview.policy_file if internal else None,
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


def _document_problems(app: FastAPI) -> None:
    """Serve the schema with every refusal as a problem (`problem_openapi`), made once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` (`consentry serve`; each worker process calls it):
    logs as the settings say (info by default), then the app."""
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level or "info")
    app = create_app(settings)
    app.openapi()
    # Everything alive now (the modules, the app, its schema: about 250,000 objects) lives
    # as long as the process. Frozen, the collector's full passes skip it: each one used to
    # scan it all, stopping the worker for ~90 ms, the consent GET's p99 (docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    return app
