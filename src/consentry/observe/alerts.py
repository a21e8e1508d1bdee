"""Alerts that push: signed webhooks per alert kind, delivered with retries.

The home's webhooks file (`<home>/webhooks.yaml`, or `CONSENTRY_WEBHOOKS_FILE`) says where
each kind of alert goes:

    webhooks:
      - name: ops
        url: https://ops.example/hooks/consentry
        kinds: [meter.level, revocations.overdue, job.failed, audit.verify_failed]
        secret_file: keys/webhooks/ops.secret      # relative to the home

Delivery (docs/operations.md):

1. The body is JSON: `id` (unique per alert; the same on every retry), `kind`, `at`
   (RFC 3339), `request_id` (the request or CLI invocation that raised it, or null) and
   `data` (the kind's fields).
2. It is signed as Standard Webhooks specifies: headers `webhook-id`, `webhook-timestamp`
   (seconds since the epoch) and `webhook-signature: v1,<base64 HMAC-SHA256 of
   "<id>.<timestamp>.<body>">`, keyed with the secret file's `whsec_<base64 key>`. A
   receiver recomputes it (`verify_signature`) and refuses stale timestamps.
3. Each webhook taking the kind gets it from a background thread: a 2xx answer delivers it;
   a 5xx, 408, 429 or a transport error is retried after 0.5, 1, 2 … seconds (`attempts`
   in all, 5 by default); any other answer gives up. A process that is ending waits for
   its queue (at most `FLUSH_SECONDS`).
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from consentry.errors import BadInput, Problem
from consentry.observe.context import current_request_id
from consentry.observe.logs import log_event
from consentry.settings import Settings

__all__ = [
    "ALERT_KINDS",
    "FLUSH_SECONDS",
    "AlertSender",
    "Webhook",
    "flush_alerts",
    "load_webhooks",
    "new_secret",
    "push_alert",
    "sign",
    "verify_signature",
]

ALERT_KINDS: Final[dict[str, str]] = {
    "meter.level": "An entity's rolling posts reached 50, 80 or 100 % of the scraping threshold.",
    "revocations.overdue": "Revocations passed their deadline unconfirmed (new ones since the "
    "last alert).",
    "job.failed": "A job was rolled back: it failed, was refused a lock, or died and was "
    "recovered.",
    "audit.verify_failed": "`consentry audit verify` found the audit log tampered with.",
}
"""Every alert kind and what raises it."""

FLUSH_SECONDS: Final = 30.0
_BACKOFF: Final = 0.5
_SECRET_PREFIX: Final = "whsec_"
_log = logging.getLogger("consentry.alerts")


class Webhook(BaseModel):
    """One receiver and the alert kinds it takes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(pattern=r"^https?://")
    kinds: list[str] = Field(min_length=1)
    secret_file: str
    attempts: int = Field(5, ge=1, le=20)
    timeout_seconds: float = Field(5.0, gt=0, le=60)

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: list[str]) -> list[str]:
        unknown = sorted(set(kinds) - set(ALERT_KINDS))
        if unknown:
            raise ValueError(f"unknown kinds {unknown}; known: {', '.join(ALERT_KINDS)}")
        return kinds


class _WebhooksFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    webhooks: list[Webhook] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Target:
    webhook: Webhook
    key: bytes


def new_secret() -> str:
    """A fresh webhook secret: `whsec_` and the base64 of 32 random bytes."""
    return _SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def _key(text: str, where: str) -> bytes:
    text = text.strip()
    if not text.startswith(_SECRET_PREFIX):
        raise BadInput(Problem(where, None, "secret", "a secret reads whsec_<base64 key>"))
    try:
        key = base64.b64decode(text[len(_SECRET_PREFIX) :], validate=True)
    except ValueError:
        raise BadInput(
            Problem(where, None, "secret", "the key after whsec_ is not base64")
        ) from None
    if len(key) < 16:
        raise BadInput(Problem(where, None, "secret", "the key must be at least 16 bytes"))
    return key


def load_webhooks(settings: Settings) -> list[tuple[Webhook, bytes]]:
    """The home's webhooks and their keys ([] without a webhooks file); BadInput naming the
    file, the entry and the field for a file that is not right."""
    path = settings.webhooks_file
    if not path.exists():
        return []
    where = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = _WebhooksFile.model_validate(raw)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise BadInput(
            Problem(where, None if line is None else line + 1, None, f"not YAML: {exc}")
        ) from None
    except ValidationError as exc:
        raise BadInput(
            [
                Problem(
                    where,
                    None,
                    ".".join(str(p) for p in e["loc"]) or None,
                    e["msg"],
                )
                for e in exc.errors()
            ]
        ) from None
    out = []
    for i, hook in enumerate(parsed.webhooks):
        secret_path = (settings.home / hook.secret_file).resolve()
        try:
            text = secret_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(
                Problem(where, None, f"webhooks.{i}.secret_file", f"cannot read it: {exc}")
            ) from None
        out.append((hook, _key(text, str(secret_path))))
    return out


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of
    `<id>.<timestamp>.<body>`."""
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode("ascii")


def verify_signature(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = 300,
    now: float | None = None,
) -> bool:
    """What a receiver checks: one of the `v1,` signatures matches and the timestamp is
    within `tolerance_seconds` of now (replays of old deliveries are refused)."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        webhook_id = lower["webhook-id"]
        timestamp = int(lower["webhook-timestamp"])
        offered = lower["webhook-signature"].split()
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_seconds:
        return False
    expected = sign(_key(secret, "secret"), webhook_id, timestamp, body)
    return any(hmac.compare_digest(expected, s) for s in offered)


class AlertSender:
    """Delivers alerts to one home's webhooks from a background thread."""

    def __init__(self, settings: Settings) -> None:
        self.targets = [_Target(h, k) for h, k in load_webhooks(settings)]
        self._queue: queue.Queue[tuple[_Target, str, str, bytes]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def push(self, kind: str, data: dict[str, Any]) -> str | None:
        """Queue alert `kind` for every webhook taking it; its id (None: nobody takes it)."""
        if kind not in ALERT_KINDS:
            raise ValueError(f"unknown alert kind {kind!r}")
        targets = [t for t in self.targets if kind in t.webhook.kinds]
        if not targets:
            return None
        alert_id = "alert_" + secrets.token_hex(12)
        body = json.dumps(
            {
                "id": alert_id,
                "kind": kind,
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "request_id": current_request_id(),
                "data": data,
            },
            separators=(",", ":"),
            sort_keys=True,
            default=str,
        ).encode("utf-8")
        for target in targets:
            self._queue.put((target, alert_id, kind, body))
        self._start()
        return alert_id

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="consentry-alerts", daemon=True
                )
                self._thread.start()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every queued delivery ended (delivered or given up); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _run(self) -> None:
        with httpx.Client(trust_env=False) as client:
            while True:
                target, alert_id, kind, body = self._queue.get()
                try:
                    self._deliver(client, target, alert_id, kind, body)
                finally:
                    self._queue.task_done()

    def _deliver(
        self, client: httpx.Client, target: _Target, alert_id: str, kind: str, body: bytes
    ) -> None:
        from consentry.observe.metrics import families

        hook = target.webhook
        outcome = "failed"
        for attempt in range(1, hook.attempts + 1):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": alert_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(target.key, alert_id, timestamp, body),
            }
            status: int | None = None
            try:
                status = client.post(
                    hook.url, content=body, headers=headers, timeout=hook.timeout_seconds
                ).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                error = f"HTTP {status}"
            if status is not None and 200 <= status < 300:
                outcome = "sent"
                log_event(_log, "alert.sent", webhook=hook.name, kind=kind, alert_id=alert_id,
                          attempt=attempt)  # fmt: skip
                break
            retry = status is None or status >= 500 or status in (408, 429)
            log_event(_log, "alert.attempt_failed", logging.WARNING, webhook=hook.name,
                      kind=kind, alert_id=alert_id, attempt=attempt, error=error,
                      retry=retry and attempt < hook.attempts)  # fmt: skip
            if not retry or attempt == hook.attempts:
                break
            time.sleep(_BACKOFF * 2 ** (attempt - 1))
        families().alert_webhooks.labels(kind, outcome).inc()


_SENDERS: dict[Path, AlertSender] = {}
_SENDERS_LOCK = threading.Lock()


def _sender(settings: Settings) -> AlertSender:
    path = settings.webhooks_file
    with _SENDERS_LOCK:
        found = _SENDERS.get(path)
        if found is None:
            found = _SENDERS[path] = AlertSender(settings)
        return found


def push_alert(settings: Settings, kind: str, data: dict[str, Any]) -> str | None:
    """Push alert `kind` to the home's webhooks (none configured: nothing happens). A webhooks
    file that cannot be read is logged, never raised: an alert must not fail its cause."""
    try:
        sender = _sender(settings)
    except BadInput as exc:
        log_event(_log, "alert.config_invalid", logging.ERROR, kind=kind, error=str(exc))
        return None
    return sender.push(kind, data)


@atexit.register
def flush_alerts(timeout: float = FLUSH_SECONDS) -> bool:
    """Wait for every queued delivery of this process (a command that ends waits here, at
    most `timeout` seconds); False when some did not end in time."""
    deadline = time.monotonic() + timeout
    return all(
        sender.flush(max(0.0, deadline - time.monotonic())) for sender in list(_SENDERS.values())
    )
