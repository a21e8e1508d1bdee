"""The audit log: documented event types appended in the same transaction as the change,
each one a leaf of an RFC 9162 Merkle log with signed checkpoints (docs/audit.md).

The event types are the dataclasses of `consentry.audit.event_types` (import them from
there). `consentry.audit.transparency` (the transparency report) and
`consentry.audit.policy_history` (publishing policy versions) are imported from their
modules.
"""

from consentry.audit.checkpoint import (
    Checkpoint,
    SignedCheckpoint,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from consentry.audit.event_types import AUDIT_EVENT_CLASSES, AuditPayload
from consentry.audit.events import (
    AUDIT_EVENT_TYPES,
    AuditEvent,
    AuditSink,
    SqlAuditSink,
    canonical_json,
    entry_json,
)
from consentry.audit.log import (
    AuditLog,
    ConsistencyProof,
    InclusionProof,
    LeafRecord,
    LogHead,
    LogIntegrityError,
    VerifyReport,
    append_events,
    entry_text,
)
from consentry.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "AUDIT_EVENT_CLASSES",
    "AUDIT_EVENT_TYPES",
    "EMPTY_ROOT",
    "AuditEvent",
    "AuditLog",
    "AuditPayload",
    "AuditSink",
    "Checkpoint",
    "ConsistencyProof",
    "InclusionProof",
    "LeafRecord",
    "LogHead",
    "LogIntegrityError",
    "MemoryTree",
    "SignedCheckpoint",
    "SqlAuditSink",
    "VerifyReport",
    "append_events",
    "canonical_json",
    "entry_json",
    "entry_text",
    "leaf_hash",
    "node_hash",
    "parse_signed_checkpoint",
    "sign_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]
