"""The last log lines at WARNING and above, in memory, for the console's logs page.

A logging handler on the root logger appends each record (already redacted: the record
factory of :mod:`edge_proxy.ops.logsetup` cleans records as they are made, and this handler
redacts once more with the same secrets) to a bounded deque, with a sequence number so the
live stream sends only what is new. Appending is all the logging call pays.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from typing import Any

from edge_proxy.ops.logsetup import REDACTOR
from edge_proxy.wire.messages import epoch_timestamp

MAX_LINE = 4000  # characters of one message kept


class LogRing(logging.Handler):
    """Keeps the last ``size`` records at ``level`` and above."""

    def __init__(self, size: int = 500, level: int = logging.WARNING) -> None:
        super().__init__(level)
        self.lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._seq = itertools.count(1)
        self.last_seq = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one record (never raises)."""
        try:
            message = REDACTOR.text(record.getMessage())
            if record.exc_text or record.exc_info:
                exc = record.exc_text or logging.Formatter().formatException(record.exc_info)  # type: ignore[arg-type]
                message += "\n" + REDACTOR.text(exc)
            seq = next(self._seq)
            line: dict[str, Any] = {
                "seq": seq,
                "at": epoch_timestamp(record.created or time.time()),
                "level": record.levelname,
                "logger": record.name,
                "message": message[:MAX_LINE],
            }
            for key, name in (("device_id", "device"), ("request_ref", "ref")):
                value = getattr(record, key, None)
                if value is not None:
                    line[name] = str(value)
            self.lines.append(line)
            self.last_seq = seq
        except Exception:  # a log line must never break the code that logs
            self.handleError(record)

    def since(self, seq: int) -> list[dict[str, Any]]:
        """The kept lines after sequence number ``seq``, oldest first."""
        return [line for line in list(self.lines) if line["seq"] > seq]

    def install(self) -> None:
        """Add to the root logger."""
        logging.getLogger().addHandler(self)

    def remove(self) -> None:
        """Take off the root logger."""
        logging.getLogger().removeHandler(self)
