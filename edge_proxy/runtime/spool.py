"""The on-disk spool: terminal messages survive an edge restart until the Gateway has them.

SQLite in WAL mode, one small table per fact:

* ``accepted``: commands acknowledged and not yet answered. After a crash each of them gets a
  terminal ``failed`` / ``INTERNAL_ERROR`` ("edge restarted"), so the backend is never left
  waiting for an answer that will not come.
* ``terminals``: terminal messages. A row is written before the message enters the outbox and
  marked delivered once the WebSocket has taken it; delivered rows are kept for the
  de-duplication window, so a command repeated after an edge restart is still answered from
  here instead of being run twice. Old rows are pruned (by age and by count).

``synchronous=NORMAL``: a commit survives the process being killed (the WAL is in the OS page
cache); only a power cut may lose the last commits, which is the trade an SD card needs.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge_proxy.wire import messages as protocol

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
    body TEXT NOT NULL,
    targets TEXT NOT NULL DEFAULT '[]',
    delivered REAL
);
CREATE INDEX IF NOT EXISTS terminals_delivered ON terminals (delivered);
"""
PRUNE_EVERY = 200  # deliveries between two prunes


class Spool:
    """A small SQLite journal of accepted commands and unsent terminal messages."""

    def __init__(self, path: str | Path, keep: float = 600.0, keep_max: int = 100000) -> None:
        self.keep = keep
        self.keep_max = keep_max
        self._since_prune = 0
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

    def terminal(self, msg: dict[str, Any], targets: list[str] | None = None) -> int:
        """Store a terminal message (and forget its accepted row); returns the spool id."""
        ref = str(msg.get("requestRef"))
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute(
                "INSERT INTO terminals (ref, body, targets) VALUES (?, ?, ?)",
                (ref, protocol.encode(msg), json.dumps(targets or [])),
            )
            self.db.execute("DELETE FROM accepted WHERE ref = ?", (ref,))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def sent(self, spool_id: int) -> None:
        """The terminal message left on the WebSocket: keep it only for de-duplication."""
        self.db.execute("UPDATE terminals SET delivered = ? WHERE id = ?", (time.time(), spool_id))
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune()

    def prune(self) -> None:
        """Forget delivered rows older than the window, and beyond the count bound."""
        self._since_prune = 0
        self.db.execute(
            "DELETE FROM terminals WHERE delivered IS NOT NULL AND delivered < ?",
            (time.time() - self.keep,),
        )
        self.db.execute(
            "DELETE FROM terminals WHERE delivered IS NOT NULL AND id NOT IN "
            "(SELECT id FROM terminals WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?)",
            (self.keep_max,),
        )

    def delivered(self) -> list[tuple[float, dict[str, Any], list[str]]]:
        """Delivered terminals still inside the window: (age in seconds, message, targets)."""
        now = time.time()
        rows = self.db.execute(
            "SELECT delivered, body, targets FROM terminals WHERE delivered IS NOT NULL ORDER BY id"
        ).fetchall()
        return [
            (max(0.0, now - at), json.loads(body), json.loads(targets))
            for at, body, targets in rows
        ]

    def recover(
        self, factory: protocol.MessageFactory
    ) -> list[tuple[int, dict[str, Any], list[str]]]:
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
        self.prune()
        out = []
        for spool_id, body, targets in self.db.execute(
            "SELECT id, body, targets FROM terminals WHERE delivered IS NULL ORDER BY id"
        ):
            out.append((int(spool_id), json.loads(body), json.loads(targets)))
        if out:
            log.info("spool: %d terminal message(s) waiting from before the restart", len(out))
        return out

    def close(self) -> None:
        """Close the database."""
        self.db.close()
