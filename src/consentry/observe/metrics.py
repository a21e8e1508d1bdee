"""Prometheus metrics: what a process counts as it works, and what the store says at scrape.

Two kinds of families (docs/operations.md lists every one):

1. **Counted in the process** as things happen: HTTP requests and their latency per route,
   method and status (`consentry_http_request_duration_seconds`, a histogram whose `_count`
   is the request count), consent changes per purpose and source
   (`consentry_consent_changes_total`), webhook deliveries per kind and outcome
   (`consentry_alert_webhooks_total`). With several server workers they run in
   prometheus-client's multiprocess mode: each worker writes its values to files in the
   directory `PROMETHEUS_MULTIPROC_DIR` names (`consentry serve` sets it) and `/metrics` sums
   them, so any worker's answer covers all of them.
2. **Read from the store at scrape time** (`consentry.observe.state`): deliveries and
   records, revocations issued, confirmed and overdue per licensee, audit log size and
   checkpoint age, jobs and their durations and failures (the `jobs` table that
   `consentry.jobs.run_job` keeps, whichever process ran them), and the online meter's top
   entities against the threshold. Counting these in memory would lose what CLI processes
   did; the store already holds them exactly.

The families are made on first use (`families()`), so a process decides on multiprocess mode
(by setting `PROMETHEUS_MULTIPROC_DIR`) before anything is counted.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "MULTIPROC_ENV",
    "Families",
    "exposition",
    "families",
    "multiprocess_dir",
]

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
"""Seconds: the API's targets sit at 25 ms (GET p99) and 50 ms (PUT p99)."""


@dataclass(frozen=True, slots=True)
class Families:
    """The families counted in the process."""

    http_duration: Histogram
    consent_changes: Counter
    alert_webhooks: Counter


_LOCK = threading.Lock()
_FAMILIES: Families | None = None


def multiprocess_dir() -> str | None:
    """The multiprocess directory when this process runs in that mode, else None."""
    return os.environ.get(MULTIPROC_ENV) or None


def families() -> Families:
    """The process's families, made on first use (in multiprocess mode when
    `PROMETHEUS_MULTIPROC_DIR` is set by then)."""
    global _FAMILIES
    if _FAMILIES is not None:
        return _FAMILIES
    with _LOCK:
        if _FAMILIES is None:
            from prometheus_client import Counter, Histogram, values

            # prometheus-client picks its value store when it is first imported; a process
            # that imported it before setting the directory (one `consentry serve` worker
            # runs in the CLI's own process) picks again here, before any value exists.
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
            _FAMILIES = Families(
                http_duration=Histogram(
                    "consentry_http_request_duration_seconds",
                    "Time to answer an HTTP request, per route template, method and status "
                    "(_count: requests).",
                    ["route", "method", "status"],
                    buckets=LATENCY_BUCKETS,
                ),
                consent_changes=Counter(
                    "consentry_consent_changes",
                    "Consent choices recorded by this server, per purpose and source.",
                    ["purpose", "source"],
                ),
                alert_webhooks=Counter(
                    "consentry_alert_webhooks",
                    "Alert webhook deliveries per alert kind and outcome (sent, failed).",
                    ["kind", "outcome"],
                ),
            )
    return _FAMILIES


def exposition(extra: Collector | None = None) -> tuple[bytes, str]:
    """The text exposition of every family (summed over the workers in multiprocess mode)
    plus `extra`'s; (body, content type)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    families()
    registry: CollectorRegistry
    directory = multiprocess_dir()
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    if extra is None:
        return generate_latest(registry), CONTENT_TYPE_LATEST
    scrape = CollectorRegistry()
    scrape.register(_Both(registry, extra))
    return generate_latest(scrape), CONTENT_TYPE_LATEST


class _Both:
    """A collector yielding a registry's families then another collector's."""

    def __init__(self, registry: CollectorRegistry, extra: Collector) -> None:
        self.registry = registry
        self.extra = extra

    def collect(self):  # type: ignore[no-untyped-def]
        yield from self.registry.collect()
        yield from self.extra.collect()
