"""What a Consentry home holds right now: policy in force, lake tables, store, recent imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from consentry.engine import Lake
from consentry.policy import PolicyVersion, load_policy
from consentry.settings import Settings
from consentry.store import ImportRunRecord, open_store

__all__ = ["Overview", "StoreStatus", "collect_overview"]


@dataclass(frozen=True, slots=True)
class StoreStatus:
    backend: str
    url: str
    revision: str | None
    reachable: bool


@dataclass(frozen=True, slots=True)
class Overview:
    home: str
    engine: str
    policy_file: str
    policy: PolicyVersion | None
    tables: dict[str, int]
    store: StoreStatus
    imports: list[ImportRunRecord] = field(default_factory=list)


def collect_overview(settings: Settings, *, at: datetime | None = None) -> Overview:
    """Read (never write) the state the home page and `/v1/status` report.

    1. The policy version in force at `at` (default now) from the configured policy file.
    2. Row counts of every lake table, from Parquet metadata (cheap at any size).
    3. The store's backend, migration revision and the 10 most recent imports; an
       unreachable store is reported, not raised, so health pages still render.
    """
    at = at or datetime.now(UTC)
    policy = load_policy(settings.policy_file).version_at(at)
    lake = Lake.of(settings)
    tables = lake.row_counts() if settings.lake_dir.exists() else {}
    store = open_store(settings.resolved_database_url)
    try:
        reachable = store.ping()
        revision = store.current_revision() if reachable else None
        imports = store.recent_imports(limit=10) if revision else []
    finally:
        store.engine.dispose()
    return Overview(
        home=str(settings.home),
        engine=settings.engine,
        policy_file=str(settings.policy_file),
        policy=policy,
        tables=tables,
        store=StoreStatus(
            backend=store.backend_name,
            url=store.describe(),
            revision=revision,
            reachable=reachable,
        ),
        imports=imports,
    )
