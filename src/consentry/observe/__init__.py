"""Operating Consentry: the request id, structured logs, Prometheus metrics and alert
webhooks (docs/operations.md)."""

from consentry.observe.alerts import ALERT_KINDS, AlertSender, push_alert, verify_signature
from consentry.observe.context import REQUEST_ID_HEADER, current_request_id, using_request_id
from consentry.observe.logs import configure_logging, log_event
from consentry.observe.metrics import exposition, families

__all__ = [
    "ALERT_KINDS",
    "REQUEST_ID_HEADER",
    "AlertSender",
    "configure_logging",
    "current_request_id",
    "exposition",
    "families",
    "log_event",
    "push_alert",
    "using_request_id",
    "verify_signature",
]
