"""Structured logs: one line per event, as JSON or as text, with the request id.

Every line has an instant (`ts`, RFC 3339 UTC), a `level`, the `logger`, an `event` (a
dotted name: `http.request`, `job.step`, `alert.sent`…), the `request_id` when the line is
written for a request or a CLI invocation, and the event's own fields. The text format
writes the same as `ts level event key=value …`. Lines go to stderr.

Log lines never hold personal data: requests are logged by route template
(`/v1/users/{user_id}/consent`), never by their path, and never with a client address.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from datetime import UTC, datetime
from typing import Any, Final, Literal

from consentry.observe.context import current_request_id

__all__ = ["LOG_FORMATS", "LogFormat", "configure_logging", "log_event"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
_HANDLER_NAME: Final = "consentry-structured"
_RESERVED: Final = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_QUOTED: Final = re.compile(r'[\s"=]')
"""A text value holding any of these is written JSON-quoted (`\\s` is `str.isspace`)."""


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Write one structured line: `event` and its `fields` (the request id is added)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"event": event, "fields": fields})


# Not fields of a line: ours are placed by `_base`; uvicorn's `color_message` is its message
# again with terminal colour codes.
_NOT_FIELDS = frozenset({"fields", "event", "request_id", "color_message"})
_SKIPPED: Final = _RESERVED | _NOT_FIELDS


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    given = getattr(record, "fields", None)
    if isinstance(given, dict):
        fields.update(given)
    # Anything else passed through `extra=` (other libraries' or ours) comes along too.
    for key, value in record.__dict__.items():
        if key not in _SKIPPED:
            fields[key] = value
    return fields


def _base(record: logging.LogRecord) -> dict[str, Any]:
    event = getattr(record, "event", None)
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": event if isinstance(event, str) else "log",
    }
    request_id = getattr(record, "request_id", None) or current_request_id()
    if request_id:
        line["request_id"] = request_id
    if not isinstance(event, str) or record.getMessage() != event:
        line["message"] = record.getMessage()
    return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`_base` keys, then the event's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        line = _base(record) | _record_fields(record)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`ts level event key=value …` (values JSON-quoted when they hold spaces)."""

    def format(self, record: logging.LogRecord) -> str:
        line = _base(record) | _record_fields(record)
        head = f"{line.pop('ts')} {line.pop('level')} {line.pop('event')}"
        line.pop("logger")
        parts = [head]
        for key, value in line.items():
            if isinstance(value, str):
                text = value
            elif type(value) is int:  # what json.dumps writes, without its machinery
                text = str(value)
            elif type(value) is float and math.isfinite(value):  # likewise (`ms=`)
                text = float.__repr__(value)
            else:
                text = json.dumps(value, default=str)
            if not text or _QUOTED.search(text):
                text = json.dumps(text, ensure_ascii=False)
            parts.append(f"{key}={text}")
        out = " ".join(parts)
        if record.exc_info:
            out += "\n" + self.formatException(record.exc_info)
        return out


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a line is written (a test runner may swap it
    between commands)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(log_format: str = "text", level: str = "info") -> None:
    """Send the `consentry` loggers' lines to stderr in `log_format` at `level` (and
    uvicorn's, so a server writes one format). Calling it again replaces the setup."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    for name in ("consentry", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
        if name != "uvicorn.error":
            logger.addHandler(handler)
        logger.setLevel(numeric)
        logger.propagate = name == "uvicorn.error"
