"""Retention: policy rules per data category, legal holds, dry-run plans, verified purges.

`compute_plan` is a pure computation (it reads the lake, the control plane and the delivery
directories, and writes nothing); `apply_plan` executes exactly a plan and verifies it. See
docs/retention.md.
"""

from consentry.retention.apply import (
    PURGE_STATES,
    Revoker,
    StalePlanError,
    apply_plan,
    load_plan,
    purge_history,
)
from consentry.retention.candidates import ANON_PREFIX, LAKE_CATEGORIES, Sources, candidates
from consentry.retention.holds import (
    HOLD_SCOPES,
    HoldRecord,
    HoldSet,
    add_hold,
    covering_hold,
    hold_set,
    list_holds,
    matter_sha256,
    release_hold,
)
from consentry.retention.plan import compute_plan
from consentry.retention.plan_file import (
    PLAN_FORMAT,
    CategoryPlan,
    PlanGap,
    PlanHold,
    PlanPolicy,
    RetentionPlan,
    plan_sha256,
)
from consentry.retention.processing import records_of_processing, render_markdown
from consentry.retention.rewrite import anonymisation_key
from consentry.retention.rules import Condition, Cutoffs, cutoff, cutoffs_for, is_due, trigger_of
from consentry.retention.verify import finish_awaiting_purges, verify_purge

__all__ = [
    "ANON_PREFIX",
    "HOLD_SCOPES",
    "LAKE_CATEGORIES",
    "PLAN_FORMAT",
    "PURGE_STATES",
    "CategoryPlan",
    "Condition",
    "Cutoffs",
    "HoldRecord",
    "HoldSet",
    "PlanGap",
    "PlanHold",
    "PlanPolicy",
    "RetentionPlan",
    "Revoker",
    "Sources",
    "StalePlanError",
    "add_hold",
    "anonymisation_key",
    "apply_plan",
    "candidates",
    "compute_plan",
    "covering_hold",
    "cutoff",
    "cutoffs_for",
    "finish_awaiting_purges",
    "hold_set",
    "is_due",
    "list_holds",
    "load_plan",
    "matter_sha256",
    "plan_sha256",
    "purge_history",
    "records_of_processing",
    "release_hold",
    "render_markdown",
    "trigger_of",
    "verify_purge",
]
