"""The on-disk spool: terminal messages survive an edge restart until the Gateway has them.

SQLite in WAL mode, one small table per fact:

* ``accepted``: commands acknowledged and not yet answered. After a crash each of them gets a
  terminal ``failed`` / ``INTERNAL_ERROR`` ("edge restarted"), so the backend is never left
  waiting for an answer that will not come.
* ``terminals``: terminal messages not yet sent. A row is written before the message enters
  the outbox and deleted once the WebSocket has taken it.

``synchronous=NORMAL``: a commit survives the process being killed (the WAL is in the OS page
cache); only a power cut may lose the last commits, which is the trade an SD card needs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from . import protocol

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accepted (
    ref TEXT PRIMARY KEY,
    callback TEXT,
    has_callback INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS terminals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref TEXT NOT NULL,
    body TEXT NOT NULL
);
"""


class Spool:
    """A small SQLite journal of accepted commands and unsent terminal messages."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def accepted(self, ref: str, callback: Any, has_callback: bool) -> None:
        """Record an acknowledged command."""
        self.db.execute(
            "INSERT OR REPLACE INTO accepted (ref, callback, has_callback) VALUES (?, ?, ?)",
            (ref, json.dumps(callback, default=str), int(has_callback)),
        )

    def terminal(self, msg: dict[str, Any]) -> int:
        """Store a terminal message (and forget its accepted row); returns the spool id."""
        ref = str(msg.get("requestRef"))
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute(
                "INSERT INTO terminals (ref, body) VALUES (?, ?)", (ref, protocol.encode(msg))
            )
            self.db.execute("DELETE FROM accepted WHERE ref = ?", (ref,))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def sent(self, spool_id: int) -> None:
        """The terminal message left on the WebSocket: forget it."""
        self.db.execute("DELETE FROM terminals WHERE id = ?", (spool_id,))

    def recover(self, factory: protocol.MessageFactory) -> list[tuple[int, dict[str, Any]]]:
        """At start-up: fail commands a crash left unanswered; return every unsent terminal."""
        rows = self.db.execute("SELECT ref, callback, has_callback FROM accepted").fetchall()
        for ref, callback, has_callback in rows:
            msg = factory.response(
                ref,
                "failed",
                error={"code": "INTERNAL_ERROR", "message": "edge restarted"},
                callback=json.loads(callback),
                has_callback=bool(has_callback),
            )
            self.terminal(msg)
        if rows:
            log.warning(
                "spool: %d command(s) were unfinished at the last stop; failing them", len(rows)
            )
        out = []
        for spool_id, body in self.db.execute("SELECT id, body FROM terminals ORDER BY id"):
            out.append((int(spool_id), json.loads(body)))
        if out:
            log.info("spool: %d terminal message(s) waiting from before the restart", len(out))
        return out

    def close(self) -> None:
        """Close the database."""
        self.db.close()
