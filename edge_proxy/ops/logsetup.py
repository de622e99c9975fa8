"""Logging: text or JSON lines, device id and requestRef on every line that has them, no secrets."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from edge_proxy.wire.messages import utc_timestamp


class RedactFilter(logging.Filter):
    """Replaces every known secret in a record's final message with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = {s for s in secrets if s}

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if self.secrets:
            message = record.getMessage()
            redacted = message
            for secret in self.secrets:
                redacted = redacted.replace(secret, "***")
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def _context(record: logging.LogRecord) -> dict[str, Any]:
    out = {}
    for key in ("device_id", "request_ref"):
        value = getattr(record, key, None)
        if value is not None:
            out[key] = value
    return out


class TextFormatter(logging.Formatter):
    """``time level logger [device=.. ref=..] message``."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a text line."""
        ctx = _context(record)
        tags = " ".join(f"{'device' if k == 'device_id' else 'ref'}={v}" for k, v in ctx.items())
        line = f"{utc_timestamp()} {record.levelname:<7} {record.name}"
        if tags:
            line += f" [{tags}]"
        line += f" {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        """Format one record as a JSON line."""
        doc: dict[str, Any] = {
            "ts": utc_timestamp(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(_context(record))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one handler on the root logger; returns it (tests remove it again)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edge_proxy", False):
            root.removeHandler(old)
    handler._edge_proxy = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # websockets logs handshake headers (the bearer token) at debug level: keep it above that.
    logging.getLogger("websockets").setLevel(max(logging.INFO, root.level))
    # pymodbus warns on every failed connect and late reply: our own log says it once, better
    logging.getLogger("pymodbus").setLevel(
        logging.DEBUG if root.level <= logging.DEBUG else logging.ERROR
    )
    return handler
