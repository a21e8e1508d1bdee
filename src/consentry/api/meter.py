"""The online meter over HTTP: `POST /v1/meter/events` (batched) and `GET /v1/meter/alerts`.

Both need an admin bearer token. The meter is built once per process on first use: the
policy in force now, the lake's entities, and the backend named by `CONSENTRY_METER_BACKEND`
(`memory`: per process; `redis`: shared by every worker), unless the app was given another
meter (`app.state.scraping_meter`; see docs/scraping.md).
"""

from __future__ import annotations

import threading
from typing import Annotated

import numpy as np
import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from consentry.api.validation import NO_CONTROL, Instant
from consentry.instants import rfc3339
from consentry.observe.alerts import push_alert
from consentry.schema import MAX_POSTS_PER_ACCESS
from consentry.scraping.results import from_us
from consentry.serving.problems import error_responses, problem
from consentry.serving.services import BearerIdentity, Services, meter_of, services

__all__ = ["MAX_BATCH", "MeterEvent", "MeterEvents", "router"]

router = APIRouter(prefix="/v1/meter", tags=["scraping"])
ServicesDep = Annotated[Services, Depends(services)]
MAX_BATCH = 100_000
"""Most events one POST may carry."""

_INGEST_LOCK = threading.Lock()
"""Batches reach the meter one at a time in a process: sync routes run on a thread pool."""


class MeterEvent(BaseModel):
    """One access as the platform's edge saw it."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=256, pattern=NO_CONTROL, description="Unique request id."
    )
    ts: Instant = Field(description="When the request was served (with an offset).")
    credential: str = Field(
        min_length=1,
        max_length=1024,
        pattern=NO_CONTROL,
        description="API key, account id or IP address.",
    )
    posts: int = Field(
        ge=0,
        le=MAX_POSTS_PER_ACCESS,
        description=f"Posts served (0 to {MAX_POSTS_PER_ACCESS:,}, as in access_events).",
    )


class MeterEvents(BaseModel):
    """A batch of accesses."""

    model_config = ConfigDict(extra="forbid")

    events: list[MeterEvent] = Field(max_length=MAX_BATCH)


def _admin(identity: BearerIdentity) -> None:
    if identity.role != "admin":
        raise problem(403, "the meter needs an admin token")


class EntityBounds(BaseModel):
    entity: str
    latest: str = Field(description="The entity's latest access (RFC 3339).")
    lower: int = Field(description="Posts certainly in the window ending at `latest`.")
    upper: int = Field(description="Posts possibly in it (bucket resolution).")


class MeterAlert(BaseModel):
    entity: str
    level: int = Field(description="50, 80 or 100 (% of the threshold).")
    at: str
    lower: int
    upper: int
    confirmed: bool = Field(description="The lower bound reached the level too.")


class IngestView(BaseModel):
    accepted: int
    entities: list[EntityBounds]
    alerts: list[MeterAlert] = Field(description="Alerts this batch raised.")


class AlertsView(BaseModel):
    threshold_posts: int
    alerts: list[MeterAlert]


def _bounds_json(entity: str, latest_us: int, lower: int, upper: int) -> EntityBounds:
    return EntityBounds(entity=entity, latest=rfc3339(from_us(latest_us)), lower=lower, upper=upper)


@router.post(
    "/events",
    summary="Feed a batch of accesses to the online meter",
    response_model=IngestView,
    responses=error_responses(400, 401, 403, 503),
)
def post_events(
    body: MeterEvents, request: Request, svc: ServicesDep, identity: BearerIdentity
) -> IngestView:
    """Attribute and count the batch; returns touched entities' bounds and new alerts."""
    _admin(identity)
    meter = meter_of(request, svc)
    events = body.events
    epoch = from_us(0)
    ts = np.array(
        [
            (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
            for d in (e.ts - epoch for e in events)
        ],
        dtype=np.int64,
    )
    with _INGEST_LOCK:
        bounds, alerts = meter.ingest(
            ts,
            pa.array([e.credential for e in events], pa.string()),
            np.array([e.posts for e in events], dtype=np.int64),
        )
    for alert in alerts:
        push_alert(
            svc.settings,
            "meter.level",
            {**alert.to_json(), "threshold_posts": meter.terms.threshold},
        )
    return IngestView(
        accepted=len(events),
        entities=[_bounds_json(b.entity, b.latest_us, b.lower, b.upper) for b in bounds],
        alerts=[MeterAlert(**a.to_json()) for a in alerts],
    )


@router.get(
    "/alerts",
    summary="Alerts raised by the online meter",
    response_model=AlertsView,
    responses=error_responses(401, 403, 503),
)
def get_alerts(request: Request, svc: ServicesDep, identity: BearerIdentity) -> AlertsView:
    """Every alert so far (50 %, 80 %, 100 % of the threshold), in the order raised."""
    _admin(identity)
    meter = meter_of(request, svc)
    return AlertsView(
        threshold_posts=meter.terms.threshold,
        alerts=[MeterAlert(**a.to_json()) for a in meter.alerts()],
    )
