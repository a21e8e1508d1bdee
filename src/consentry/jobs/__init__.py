"""Multi-step jobs that survive crashes: intents, named steps, locks and recovery.

Every job that changes more than one store (an import, a delivery, a revocation run, a
retention apply, a scraping assessment) runs through `run_job`: it records its intent
first, names each step it reaches, and is recovered — rolled back if it had made nothing
visible, rolled forward if it had — by the next command or by `consentry recover`.
The rules are in docs/invariants.md.
"""

from consentry.faults import FAILPOINTS_ENV, failpoint
from consentry.jobs.runner import (
    JOB_STEPS,
    Job,
    JobBusy,
    JobRecord,
    Recoverer,
    owner_alive,
    pending_jobs,
    recover_jobs,
    register_recoverer,
    resume_job,
    run_job,
)

__all__ = [
    "FAILPOINTS_ENV",
    "JOB_STEPS",
    "Job",
    "JobBusy",
    "JobRecord",
    "Recoverer",
    "failpoint",
    "owner_alive",
    "pending_jobs",
    "recover_jobs",
    "register_recoverer",
    "resume_job",
    "run_job",
]
