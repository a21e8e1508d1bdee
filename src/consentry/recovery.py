"""Recovery of interrupted jobs for a home: what `consentry recover` and every job-starting
command run first (docs/invariants.md, "Jobs").

This module sits above the capabilities: importing them registers each kind of job's
recoverer, then `consentry.jobs.recover_jobs` rolls every dead job back or forward.
"""

from __future__ import annotations

from consentry import intake, lake_vacuum
from consentry.delivery import service as delivery_service
from consentry.errors import ConsentryError
from consentry.jobs import JobRecord, recover_jobs, register_recoverer
from consentry.retention.apply import RetentionRecoverer
from consentry.revocation import revoke_purged
from consentry.revocation import service as revocation_service
from consentry.scraping import service as scraping_service
from consentry.settings import Settings
from consentry.store import open_store

__all__ = ["recover", "require_store", "store_ready"]

_CAPABILITIES = (intake, lake_vacuum, delivery_service, revocation_service, scraping_service)
"""Modules whose import registers a job kind's recoverer (kept referenced on purpose)."""

# A purge interrupted after its plan was recorded is finished with revocations: no purged
# delivered post leaves its licensees untold.
register_recoverer("retention", RetentionRecoverer(revoker=revoke_purged))


def store_ready(settings: Settings) -> bool:
    """True when the home's store is initialised at the current migration."""
    with open_store(settings.resolved_database_url) as store:
        return store.current_revision() == store.head_revision()


def require_store(settings: Settings) -> None:
    """Fail (exit 1) when the home's store is not initialised at the current migration."""
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            raise ConsentryError(
                f"the store at {store.describe()} is not initialised or not up to date; "
                "run `consentry init` first"
            )


def recover(settings: Settings) -> list[JobRecord]:
    """Recover every job of the home whose process died; return those jobs.

    1. The store must be initialised (`consentry init`).
    2. Each dead `running` job is rolled back, each dead `committed` one rolled forward
       (`consentry.jobs.recover_jobs`); live jobs are left alone.
    """
    require_store(settings)
    return recover_jobs(settings)
