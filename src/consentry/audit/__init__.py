"""The audit log: documented event types appended in the same transaction as the change."""

from consentry.audit.events import (
    AUDIT_EVENT_TYPES,
    AuditEvent,
    AuditSink,
    SqlAuditSink,
    canonical_json,
)

__all__ = ["AUDIT_EVENT_TYPES", "AuditEvent", "AuditSink", "SqlAuditSink", "canonical_json"]
