"""Metric families read from the store (and the online meter) when `/metrics` is scraped.

Each is a handful of grouped SQL counts over tables that are small or indexed; nothing is
kept in memory between scrapes, so every worker and every process that ran a job agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import sqlalchemy as sa

from consentry.store import Store
from consentry.store.models import (
    AuditCheckpointRow,
    AuditHeadRow,
    DeliveryRow,
    JobRow,
    Licensee,
    RevocationRow,
)

if TYPE_CHECKING:
    from prometheus_client.core import Metric

__all__ = ["JOB_BUCKETS", "METER_TOP", "MeterReadings", "StateCollector"]

JOB_BUCKETS: Final = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
"""Seconds: a revocation run takes a second, a 10M-post delivery a minute or two."""

METER_TOP: Final = 10
"""Entities the meter families show: the ones with the largest rolling counts."""


class _EntityBounds(Protocol):
    @property
    def entity(self) -> str: ...
    @property
    def lower(self) -> int: ...
    @property
    def upper(self) -> int: ...


class _AlertLevel(Protocol):
    @property
    def level(self) -> int: ...


class _Threshold(Protocol):
    @property
    def threshold(self) -> int: ...


class MeterReadings(Protocol):
    """What the metrics read from the online meter (`consentry.scraping.meter.Meter`); a
    protocol, so that observing sits below the capabilities it observes."""

    @property
    def terms(self) -> _Threshold: ...
    def top_entities(self, n: int) -> Sequence[_EntityBounds]: ...
    def alerts(self) -> Sequence[_AlertLevel]: ...


@dataclass
class StateCollector:
    """A prometheus-client collector over one home's store and (when built) its meter."""

    store: Store
    meter: MeterReadings | None = None

    def collect(self) -> Iterator[Metric]:
        now = datetime.now(UTC)
        with self.store.session() as session:
            names = dict(session.execute(sa.select(Licensee.id, Licensee.name)).all())
            yield from _deliveries(session, names)
            yield from _revocations(session, names, now)
            yield from _audit(session, now)
            yield from _jobs(session)
        if self.meter is not None:
            yield from _meter(self.meter)


def _deliveries(session: Any, names: dict[str, str]) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    deliveries = GaugeMetricFamily(
        "consentry_deliveries",
        "Deliveries that exist (not purged), per licensee.",
        labels=["licensee"],
    )
    records = GaugeMetricFamily(
        "consentry_delivery_records",
        "Records in the deliveries that exist, per licensee.",
        labels=["licensee"],
    )
    rows = session.execute(
        sa.select(DeliveryRow.licensee_id, sa.func.count(), sa.func.sum(DeliveryRow.delivered))
        .where(DeliveryRow.purged_at.is_(None))
        .group_by(DeliveryRow.licensee_id)
    ).all()
    for licensee_id, count, delivered in rows:
        name = names.get(licensee_id, licensee_id)
        deliveries.add_metric([name], int(count))
        records.add_metric([name], int(delivered or 0))
    yield deliveries
    yield records


def _revocations(session: Any, names: dict[str, str], now: datetime) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    issued = CounterMetricFamily(
        "consentry_revocations_issued",
        "Revocations issued to each licensee (records it must delete).",
        labels=["licensee"],
    )
    confirmed = CounterMetricFamily(
        "consentry_revocations_confirmed",
        "Revocations each licensee confirmed with a receipt.",
        labels=["licensee"],
    )
    overdue = GaugeMetricFamily(
        "consentry_revocations_overdue",
        "Unconfirmed revocations past their deadline, per licensee.",
        labels=["licensee"],
    )
    done = RevocationRow.confirmed_at.is_not(None)
    late = sa.and_(RevocationRow.confirmed_at.is_(None), RevocationRow.due_at < now)
    rows = session.execute(
        sa.select(
            RevocationRow.licensee_id,
            sa.func.count(),
            sa.func.sum(sa.case((done, 1), else_=0)),
            sa.func.sum(sa.case((late, 1), else_=0)),
        ).group_by(RevocationRow.licensee_id)
    ).all()
    for licensee_id, count, confirmed_count, overdue_count in rows:
        name = names.get(licensee_id, licensee_id)
        issued.add_metric([name], int(count))
        confirmed.add_metric([name], int(confirmed_count or 0))
        overdue.add_metric([name], int(overdue_count or 0))
    yield issued
    yield confirmed
    yield overdue


def _audit(session: Any, now: datetime) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    size = session.scalar(sa.select(AuditHeadRow.size).where(AuditHeadRow.id == 1))
    yield GaugeMetricFamily(
        "consentry_audit_log_size", "Leaves (audit events) in the audit log.", value=int(size or 0)
    )
    last = session.execute(
        sa.select(AuditCheckpointRow.signed_at, AuditCheckpointRow.size)
        .order_by(AuditCheckpointRow.signed_at.desc())
        .limit(1)
    ).first()
    age = (now - last[0]).total_seconds() if last is not None else float("inf")
    yield GaugeMetricFamily(
        "consentry_audit_checkpoint_age_seconds",
        "Seconds since the latest recorded checkpoint was signed (+Inf: none yet).",
        value=age,
    )
    yield GaugeMetricFamily(
        "consentry_audit_checkpoint_size",
        "Tree size of the latest recorded checkpoint (0: none yet).",
        value=int(last[1]) if last is not None else 0,
    )


def _jobs(session: Any) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    duration = HistogramMetricFamily(
        "consentry_job_duration_seconds",
        "Duration of finished jobs (start to done or rolled back), per kind and state.",
        labels=["kind", "state"],
    )
    failures = CounterMetricFamily(
        "consentry_job_failures",
        "Jobs rolled back (they failed, were refused a lock, or died and were recovered).",
        labels=["kind"],
    )
    seconds = sa.func.sum(_seconds(session, JobRow.finished_at, JobRow.started_at))
    limits = [
        sa.func.sum(
            sa.case((_seconds(session, JobRow.finished_at, JobRow.started_at) <= bound, 1), else_=0)
        )
        for bound in JOB_BUCKETS
    ]
    rows = session.execute(
        sa.select(JobRow.kind, JobRow.state, sa.func.count(), seconds, *limits)
        .where(JobRow.finished_at.is_not(None))
        .group_by(JobRow.kind, JobRow.state)
    ).all()
    failed: dict[str, int] = {}
    for kind, state, count, total, *cumulative in rows:
        buckets = [(_bound(b), int(c or 0)) for b, c in zip(JOB_BUCKETS, cumulative, strict=True)]
        duration.add_metric([kind, state], [*buckets, ("+Inf", int(count))], float(total or 0.0))
        # Every kind that ran has a failure count, 0 included: `increase()` needs the series.
        failed[kind] = failed.get(kind, 0) + (int(count) if state == "rolled_back" else 0)
    for kind in sorted(failed):
        failures.add_metric([kind], failed[kind])
    yield duration
    yield failures


def _bound(value: float) -> str:
    return f"{value:g}" if value != int(value) else f"{value:.1f}"


def _seconds(session: Any, end: Any, start: Any) -> Any:
    """`end - start` in seconds, in the session's SQL dialect."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86_400.0


def _meter(meter: MeterReadings) -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    threshold = meter.terms.threshold
    yield GaugeMetricFamily(
        "consentry_meter_threshold_posts",
        "Posts in any rolling window above which the scraping clause bills.",
        value=threshold,
    )
    posts = GaugeMetricFamily(
        "consentry_meter_entity_posts",
        f"Rolling posts of the {METER_TOP} entities with the most (upper and lower bound).",
        labels=["entity", "bound"],
    )
    ratio = GaugeMetricFamily(
        "consentry_meter_entity_threshold_ratio",
        f"Upper bound of the rolling posts over the threshold, for the top {METER_TOP} "
        "entities (0.8: 80 %).",
        labels=["entity"],
    )
    for bounds in meter.top_entities(METER_TOP):
        posts.add_metric([bounds.entity, "upper"], bounds.upper)
        posts.add_metric([bounds.entity, "lower"], bounds.lower)
        ratio.add_metric([bounds.entity], bounds.upper / threshold if threshold else 0.0)
    yield posts
    yield ratio
    alerts = GaugeMetricFamily(
        "consentry_meter_alerts",
        "Alerts the meter raised so far, per level (50, 80, 100 % of the threshold).",
        labels=["level"],
    )
    counted: dict[int, int] = {}
    for alert in meter.alerts():
        counted[alert.level] = counted.get(alert.level, 0) + 1
    for level in sorted(counted):
        alerts.add_metric([str(level)], counted[level])
    yield alerts
