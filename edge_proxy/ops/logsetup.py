"""Logging: text or JSON lines, device id and requestRef on every line that has them, no secrets."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from edge_proxy.wire.messages import utc_timestamp


def _forms(secret: str) -> set[str]:
    """A secret as it may appear in a log line: as is, and escaped by repr() or JSON."""
    forms = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    return {f for f in forms if f}


class Redactor:
    """Replaces every known secret in a text, or in a log record, with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: list[str] = []
        self.secrets: set[str] = set()
        self.add(secrets)

    def replace(self, secrets: Iterable[str]) -> None:
        """Redact these secrets instead of the ones known so far."""
        self.secrets = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        """Also redact these secrets (empty ones are ignored)."""
        self.secrets |= {s for s in secrets if s}
        forms: set[str] = set()
        for secret in self.secrets:
            forms |= _forms(secret)
        # longest first: a form that contains another is replaced whole
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` with every secret replaced."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def record(self, record: logging.LogRecord) -> None:
        """Redact a record in place: message, arguments, exception text and stack.

        The exception is formatted here and kept as ``exc_text`` (what formatters print);
        when it held a secret, ``exc_info`` is dropped so no formatter can render it again.
        """
        if not self._forms:
            return
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message: keep both, redacted
            message = f"{record.msg} (arguments: {record.args!r})"
            record.args = None
        clean = self.text(message)
        if clean != message or (record.args and self.text(repr(record.args)) != repr(record.args)):
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            clean = self.text(record.exc_text)
            if clean != record.exc_text:
                record.exc_text, record.exc_info = clean, None
        if record.stack_info:
            record.stack_info = self.text(record.stack_info)


_FORMATTER = logging.Formatter()
#: The secrets of the running configuration; every record is redacted against them.
REDACTOR = Redactor()


class RedactFilter(logging.Filter):
    """Replaces every known secret in a record (message, args, exception, stack) with ``***``."""

    def __init__(self, secrets: Iterable[str] = (), redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor(secrets)
        if redactor is not None:
            redactor.add(secrets)

    @property
    def secrets(self) -> set[str]:
        """The secrets this filter redacts."""
        return self.redactor.secrets

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        self.redactor.record(record)
        return True


class _RedactingFactory:
    """A log record factory that redacts each record as it is made, for every handler."""

    def __init__(self, base: Callable[..., logging.LogRecord], redactor: Redactor) -> None:
        self.base = base
        self.redactor = redactor

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.base(*args, **kwargs)
        self.redactor.record(record)
        return record


def _install_factory(redactor: Redactor) -> None:
    """Redact records where they are made, for every handler of the root logger.

    A handler added by anyone at any time (a library's, a test's) sees the same clean record.
    """
    current = logging.getLogRecordFactory()
    base = current.base if isinstance(current, _RedactingFactory) else current
    logging.setLogRecordFactory(_RedactingFactory(base, redactor))


def add_secrets(secrets: Iterable[str]) -> None:
    """Redact these secrets too from now on (a token that a reload brought in)."""
    REDACTOR.add(secrets)


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
        exc = _exception_text(self, record)
        if exc:
            line += "\n" + exc
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
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
        exc = _exception_text(self, record)
        if exc:
            doc["exc"] = exc
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The record's exception as text: its (redacted) ``exc_text`` when it has one."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    return record.exc_text or ""


def setup_logging(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install one handler on the root logger; returns it (tests remove it again).

    ``secrets`` replace those of an earlier call. They are redacted from every record as it
    is made, so every handler of the root logger gets clean records, ours and any other.
    """
    REDACTOR.replace(secrets)
    _install_factory(REDACTOR)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactFilter(redactor=REDACTOR))
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
