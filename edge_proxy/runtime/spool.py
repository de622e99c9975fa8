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

Every write runs on a worker thread of its own, in batches (one transaction per batch), so a
slow disk never stalls the event loop. Each write gets a *ticket*; the outbox does not send a
message before the spool has committed its ticket, so an ``ack`` or a terminal never reaches
the Gateway before the row that a restart needs. A write that fails (disk full, read-only
file system) is logged and counted and still releases its ticket: the spool then protects
less, but no command is ever stranded without its terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_proxy.wire import framing
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
BATCH = 500  # writes in one transaction at most

Op = tuple[str, tuple[Any, ...]]


class Spool:
    """A small SQLite journal of accepted commands and unsent terminal messages."""

    def __init__(self, path: str | Path, keep: float = 600.0, keep_max: int = 100000) -> None:
        self.keep = keep
        self.keep_max = keep_max
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        row = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM terminals").fetchone()
        self._next_id = int(row[0]) + 1
        self.ticket = 0  # the ticket of the last write queued
        self.committed = 0  # the last ticket the worker finished (committed or failed)
        self.failures = 0  # writes that could not be committed
        self.writes = 0
        #: called with a ticket once every write up to it is finished (on the event loop)
        self.on_commit: Callable[[int], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[tuple[int, Op] | None] = queue.SimpleQueue()
        self._idle = threading.Condition()
        self._failing = False
        self._worker = threading.Thread(target=self._work, name="spool-writer", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ writes (any thread)

    def _submit(self, op: str, *args: Any) -> int:
        if self._loop is None:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()
        self.ticket += 1
        self._queue.put((self.ticket, (op, args)))
        return self.ticket

    def accepted(self, ref: str, callback: Any, has_callback: bool) -> int:
        """Record an acknowledged command; returns the write's ticket."""
        return self._submit("accepted", ref, json.dumps(callback, default=str), int(has_callback))

    def terminal(self, msg: dict[str, Any], targets: list[str] | None = None) -> int:
        """Store a terminal message (and forget its accepted row); returns the spool id."""
        spool_id = self._next_id
        self._next_id += 1
        ref = str(msg.get("requestRef"))
        self._submit("terminal", spool_id, ref, framing.encode(msg), json.dumps(targets or []))
        return spool_id

    def sent(self, spool_id: int) -> None:
        """The Gateway has the terminal message: keep it only for de-duplication."""
        self._submit("sent", spool_id, time.time())

    def prune(self) -> None:
        """Forget delivered rows older than the window, and beyond the count bound."""
        self._submit("prune")
        self.flush()

    # ------------------------------------------------------------------ the worker

    def _work(self) -> None:
        db = sqlite3.connect(str(self.path), isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")
        since_prune = 0
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            since_prune += sum(1 for _, (op, _) in batch if op == "sent")
            if since_prune >= PRUNE_EVERY:
                since_prune = 0
                batch.append((batch[-1][0], ("prune", ())))
            self._write(db, batch)
            if stop:
                break
        db.close()

    def _write(self, db: sqlite3.Connection, batch: list[tuple[int, Op]]) -> None:
        try:
            db.execute("BEGIN")
            for _, (op, args) in batch:
                self._apply(db, op, args)
            db.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self.failures += len(batch)
            if not self._failing:
                log.error("spool: cannot write %s: %s (terminals are still sent)", self.path, exc)
            self._failing = True
        else:
            if self._failing:
                log.warning("spool: writing to %s works again", self.path)
            self._failing = False
            self.writes += len(batch)
        self._finished(batch[-1][0])

    def _apply(self, db: sqlite3.Connection, op: str, args: tuple[Any, ...]) -> None:
        if op == "accepted":
            db.execute(
                "INSERT OR REPLACE INTO accepted (ref, callback, has_callback) VALUES (?, ?, ?)",
                args,
            )
        elif op == "terminal":
            spool_id, ref, body, targets = args
            db.execute(
                "INSERT INTO terminals (id, ref, body, targets) VALUES (?, ?, ?, ?)",
                (spool_id, ref, body, targets),
            )
            db.execute("DELETE FROM accepted WHERE ref = ?", (ref,))
        elif op == "sent":
            spool_id, at = args
            db.execute("UPDATE terminals SET delivered = ? WHERE id = ?", (at, spool_id))
        elif op == "prune":
            db.execute(
                "DELETE FROM terminals WHERE delivered IS NOT NULL AND delivered < ?",
                (time.time() - self.keep,),
            )
            db.execute(
                "DELETE FROM terminals WHERE delivered IS NOT NULL AND id NOT IN "
                "(SELECT id FROM terminals WHERE delivered IS NOT NULL ORDER BY id DESC LIMIT ?)",
                (self.keep_max,),
            )

    def _finished(self, ticket: int) -> None:
        with self._idle:
            self.committed = ticket
            self._idle.notify_all()
        callback, loop = self.on_commit, self._loop
        if callback is None:
            return
        if loop is None:
            callback(ticket)
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(callback, ticket)

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every write queued so far is finished (start-up, shutdown, tests)."""
        target = self.ticket
        with self._idle:
            return self._idle.wait_for(lambda: self.committed >= target, timeout)

    # ------------------------------------------------------------------ reads (start-up)

    def delivered(self) -> list[tuple[float, dict[str, Any], list[str]]]:
        """Delivered terminals still inside the window: (age in seconds, message, targets)."""
        self.flush()
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
        """Finish every queued write, stop the worker and close the database."""
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join(30.0)
        self.db.close()
