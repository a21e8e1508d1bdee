"""Revocations: delivered records that are no longer eligible, the log that tells each
licensee once, their deletion receipts and deadlines, and who received a user's posts.

docs/revocations.md is the user-facing description.
"""

from consentry.revocation.job import (
    CANDIDATE_SCHEMA,
    DELIVERIES_SCHEMA,
    Candidates,
    lineage_of_posts,
    revocation_candidates,
)
from consentry.revocation.log import LOG_SCHEMA, ReceiptResult, RevocationEntry, RevocationLog
from consentry.revocation.rules import (
    MAX_PAGE,
    MAX_RECEIPT_IDS,
    RECORD_ID,
    REVOCATION_REASONS,
    Cursor,
    ExtraReason,
    RevocationStatus,
    decode_cursor,
    due_at,
    encode_cursor,
    lines_digest,
    lines_digest_arrow,
    parse_receipt_ids,
    status_of,
)
from consentry.revocation.service import (
    RunReport,
    licensee_overview,
    overdue_revocations,
    recipients_of,
    revoke_purged,
    run_revocations,
    visible_deliveries,
)

__all__ = [
    "CANDIDATE_SCHEMA",
    "DELIVERIES_SCHEMA",
    "LOG_SCHEMA",
    "MAX_PAGE",
    "MAX_RECEIPT_IDS",
    "RECORD_ID",
    "REVOCATION_REASONS",
    "Candidates",
    "Cursor",
    "ExtraReason",
    "ReceiptResult",
    "RevocationEntry",
    "RevocationLog",
    "RevocationStatus",
    "RunReport",
    "decode_cursor",
    "due_at",
    "encode_cursor",
    "licensee_overview",
    "lineage_of_posts",
    "lines_digest",
    "lines_digest_arrow",
    "overdue_revocations",
    "parse_receipt_ids",
    "recipients_of",
    "revocation_candidates",
    "revoke_purged",
    "run_revocations",
    "status_of",
    "visible_deliveries",
]
