"""The command engine: Gateway frames in; ack, progress and exactly one terminal message out.

Every accepted ``requestRef`` gets a :class:`CommandState`. Its task runs the plan built by
:mod:`edge_proxy.operations` on the devices' link queues and always ends in
:meth:`Engine._finish`, which sends the one terminal message and remembers it for
de-duplication. Timeouts and CANCEL never interrupt a transaction: they mark the command's
:class:`~edge_proxy.drivers.OperationContext`, drop its queued jobs, and wait for a running
job to stop at its next checkpoint, so nothing reaches a device after its terminal message.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from edge_proxy.config import CommandsConfig
from edge_proxy.core.plan import plan_command
from edge_proxy.drivers import OperationContext
from edge_proxy.errors import RequestError
from edge_proxy.runtime.dedup import DedupStore
from edge_proxy.runtime.devices import DeviceRuntime
from edge_proxy.runtime.executor import CommandState, Executor, ProgressUpdate
from edge_proxy.runtime.queries import TelemetryView, answer_query
from edge_proxy.wire import framing
from edge_proxy.wire import messages as protocol
from edge_proxy.wire.names import LOCAL_PREFIXES

__all__ = ["PROGRESS_INTERVAL", "CommandState", "Engine"]

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]


class Journal(Protocol):
    """The spool as the engine uses it."""

    ticket: int

    def accepted(self, ref: str, callback: Any, has_callback: bool) -> int:
        """Record an accepted command; returns the write's ticket."""
        ...

    def terminal(self, msg: dict[str, Any], targets: list[str] | None = None) -> int:
        """Store a terminal; returns its spool id (its ticket is ``ticket`` after the call)."""
        ...


class TerminalRoom(Protocol):
    """The outbox as the engine uses it: room for a terminal, reserved before the ack."""

    def reserve(self, request_ref: str) -> bool:
        """Keep room for one terminal; False when there is none."""
        ...

    def release(self, request_ref: str) -> None:
        """Give back a reservation."""
        ...


PROGRESS_INTERVAL = 0.1


class Engine:
    """Validates, schedules and answers Gateway commands."""

    def __init__(
        self,
        edge_id: str,
        devices: Mapping[str, DeviceRuntime],
        config: CommandsConfig,
        factory: protocol.MessageFactory,
        emit: Emit,
        max_frame: int = 1024**2,
    ) -> None:
        self.edge_id = edge_id
        self.executor = Executor(dict(devices), self._progress)
        self.finished = DedupStore(config.dedup_window, config.dedup_max, config.dedup_max_bytes)
        self.config = config
        self.factory = factory
        self.emit = emit
        self.max_frame = max_frame
        self.running: dict[str, CommandState] = {}
        self.accepting = True
        self.counts: collections.Counter[str] = collections.Counter()
        self.on_terminal: Callable[[str, str, str, float], None] | None = None
        #: the on-disk spool, when configured (edge_proxy.runtime.spool.Spool)
        self.journal: Journal | None = None
        #: where terminals wait for the Gateway (the outbox): room is reserved before an ack
        self.room: TerminalRoom | None = None
        #: the telemetry collector, for QUERY values and the devices' poll figures
        self.telemetry: TelemetryView | None = None

    @property
    def config(self) -> CommandsConfig:
        """The engine's limits (replaced as a whole on reload)."""
        return self._config

    @config.setter
    def config(self, config: CommandsConfig) -> None:
        self._config = config
        self.finished.window = config.dedup_window
        self.finished.max_count = config.dedup_max
        self.finished.max_bytes = config.dedup_max_bytes

    @property
    def devices(self) -> dict[str, DeviceRuntime]:
        """The devices commands may target (replaced as a whole on reload)."""
        return self.executor.devices

    @devices.setter
    def devices(self, devices: Mapping[str, DeviceRuntime]) -> None:
        self.executor.devices = dict(devices)

    def abort(self, cs: CommandState, reason: str) -> None:
        """Stop a command (timeout, CANCEL, shutdown); it ends with one terminal message."""
        self.executor.abort(cs, reason)

    # ------------------------------------------------------------------ frames in

    def handle_frame(self, data: str | bytes) -> None:
        """Process one Gateway frame; never raises."""
        msg: protocol.Incoming | None = None
        try:
            msg = protocol.parse_frame(data, self.max_frame)
            self.counts[f"in:{msg.type}"] += 1
            self._dispatch(msg)
        except RequestError as exc:
            ref = exc.details.pop("requestRef", None) if exc.details else None
            if ref is None and msg is not None:
                ref = msg.request_ref
            self.counts[f"rejected:{exc.code}"] += 1
            log.warning("rejected frame: %s: %s", exc.code, exc.message, extra={"request_ref": ref})
            self.emit(
                self.factory.error(
                    exc.code, exc.message, request_ref=ref, details=exc.details or None
                )
            )
        except Exception as exc:  # a bug must not take the session down
            ref = msg.request_ref if msg is not None else None
            log.exception("internal error while handling a frame", extra={"request_ref": ref})
            self.emit(
                self.factory.error(
                    "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}", request_ref=ref
                )
            )

    def _dispatch(self, msg: protocol.Incoming) -> None:
        if msg.type == "COMMAND":
            self._command(msg)
        elif msg.type == "CANCEL":
            self._cancel(msg)
        elif msg.type == "QUERY":
            self._query(msg)
        elif msg.type == "ERROR":
            log.warning(
                "Gateway error: %s %s",
                msg.body.get("code"),
                msg.body.get("message"),
                extra={"request_ref": msg.request_ref},
            )
        else:
            log.debug("Gateway %s accepted", msg.type)

    def _reject(self, req: protocol.CommandRequest, exc: RequestError) -> None:
        self.counts[f"rejected:{exc.code}"] += 1
        extra = {"request_ref": req.request_ref}
        log.info("command rejected: %s: %s", exc.code, exc.message, extra=extra)
        self.emit(
            self.factory.error(
                exc.code,
                exc.message,
                request_ref=req.request_ref,
                details=exc.details or None,
                callback=req.callback,
                has_callback=req.has_callback,
            )
        )

    def _command(self, msg: protocol.Incoming) -> None:
        req = protocol.parse_command(msg)
        ref = req.request_ref
        if self._duplicate(ref, req):
            return
        try:
            if not self.accepting:
                raise RequestError("OVERLOADED", "the edge is shutting down")
            if req.target_edge != self.edge_id:
                raise RequestError(
                    "WRONG_EDGE",
                    f"targetClientId names edge {req.target_edge!r}; this is {self.edge_id!r}",
                    {"field": "targetClientId"},
                )
            plan = plan_command(req, self.devices, self.config)
            targets = plan.targets
            if len(self.running) >= self.config.max_queued:
                raise RequestError(
                    "OVERLOADED", f"{len(self.running)} commands are already in progress"
                )
            links = {d.link for d in (self.devices[t] for t in targets) if d.link is not None}
            for link in links:
                if link.reserved >= link.max_queued:
                    raise RequestError(
                        "OVERLOADED", f"link {link.name} has {link.reserved} commands waiting"
                    )
            local = ref.startswith(LOCAL_PREFIXES)
            if not local and self.room is not None and not self.room.reserve(ref):
                raise RequestError(
                    "OVERLOADED", "the outbox has no room left for another command's answer"
                )
        except RequestError as exc:
            self._reject(req, exc)
            return
        loop = asyncio.get_running_loop()
        timeout = (req.timeout_ms / 1000.0) if req.timeout_ms else self.config.default_timeout
        ctx = OperationContext(ref, loop.time() + timeout)
        cs = CommandState(req, ctx, time.monotonic(), targets, links)
        for link in links:
            link.reserved += 1
        self.running[ref] = cs
        self.counts[f"accepted:{req.command_type}"] += 1
        ack = self.factory.ack(ref, "accepted", targets)
        ack["_later"] = True  # queued now, written once the device request is out
        if self.journal is not None and not local:
            try:  # the ack waits in the outbox until this row is committed
                ack["_ticket"] = self.journal.accepted(ref, req.callback, req.has_callback)
            except Exception:
                self.counts["spool_failures"] += 1
                log.exception("spool: cannot record the command", extra={"request_ref": ref})
        self.emit(ack)
        cs.deadline_handle = loop.call_at(ctx.deadline or 0.0, self.abort, cs, "timeout")
        self.executor.start(cs, plan, self._finish)

    def _duplicate(self, ref: str, req: protocol.CommandRequest) -> bool:
        cs = self.running.get(ref)
        if cs is not None:
            cs.duplicates += 1
            self.emit(self.factory.ack(ref, "duplicate", cs.targets))
            return True
        done = self.finished.get(ref)
        if done is not None:
            self.emit(self.factory.ack(ref, "duplicate", list(done.targets)))
            # the stored message itself, with its own messageId
            self.emit({**done.message, "replay": True})
            return True
        del req
        return False

    # ------------------------------------------------------------------ progress and finish

    def _progress(
        self, cs: CommandState, completed: int, total: int, stage: str, device_id: str | None
    ) -> None:
        pct = min(100, max(0, (completed * 100) // max(total, 1)))
        if pct < cs.progress_sent or cs.finished:
            return
        # the frame is built only when it is sent: most updates of a big batch are throttled
        update = (pct, stage, completed, total, device_id)
        now = time.monotonic()
        if now - cs.progress_last >= PROGRESS_INTERVAL:
            self._send_progress(cs, update)
        else:
            cs.progress_pending = update
            if cs.progress_handle is None:
                delay = PROGRESS_INTERVAL - (now - cs.progress_last)
                cs.progress_handle = asyncio.get_running_loop().call_later(
                    delay, self._flush_progress, cs
                )

    def _send_progress(self, cs: CommandState, update: ProgressUpdate) -> None:
        if cs.progress_handle is not None:  # a timer left from a held-back update is stale now
            cs.progress_handle.cancel()
            cs.progress_handle = None
        cs.progress_pending = None
        cs.progress_last = time.monotonic()
        cs.progress_sent = update[0]
        self.emit(self.factory.progress(cs.request.request_ref, *update))

    def _flush_progress(self, cs: CommandState) -> None:
        cs.progress_handle = None
        if cs.progress_pending is not None and not cs.finished:
            self._send_progress(cs, cs.progress_pending)

    def _finish(
        self, cs: CommandState, status: str, result: Any, error: dict[str, Any] | None
    ) -> None:
        if cs.finished:
            return
        if cs.progress_handle is not None:
            cs.progress_handle.cancel()
            cs.progress_handle = None
        if cs.progress_pending is not None:
            self._send_progress(cs, cs.progress_pending)
        cs.finished = True
        for link in cs.links:
            link.reserved -= 1
        if cs.deadline_handle is not None:
            cs.deadline_handle.cancel()
        req = cs.request
        elapsed = time.monotonic() - cs.arrived
        msg = self.factory.response(
            req.request_ref,
            status,
            result=result,
            error=error,
            duration_ms=int(elapsed * 1000),
            callback=req.callback,
            has_callback=req.has_callback,
        )
        self.running.pop(req.request_ref, None)
        self.counts[f"terminal:{req.command_type}:{status}"] += 1
        # a line per command at DEBUG only (the hot path); failures and timeouts at INFO
        log.log(
            logging.DEBUG if status in ("completed", "partial") else logging.INFO,
            "command %s %s %s in %d ms",
            req.command_type,
            req.command_code or req.operation_type or "",
            status,
            int(elapsed * 1000),
            extra={"request_ref": req.request_ref},
        )
        msg, text, full = framing.fit_encoded(msg, self.max_frame)
        out = {**msg, "_text": text}
        if self.journal is not None and not req.request_ref.startswith(LOCAL_PREFIXES):
            try:  # the terminal waits in the outbox until this row is committed
                out["_spool_id"] = self.journal.terminal(msg, cs.targets)
                out["_ticket"] = self.journal.ticket
            except Exception:
                self.counts["spool_failures"] += 1
                log.exception(
                    "spool: cannot store the terminal message",
                    extra={"request_ref": req.request_ref},
                )
        try:
            self.emit(out)
        finally:
            if self.room is not None:  # a no-op once the outbox has queued the terminal
                self.room.release(req.request_ref)
        for _ in range(cs.duplicates):
            self.emit({**msg, "replay": True})
        full_size = framing.size({"r": full}) if full is not None else 0
        self.finished.add(req.request_ref, text, cs.targets, results=full, results_size=full_size)
        if self.on_terminal is not None:
            self.on_terminal(req.command_type, status, req.request_ref, elapsed)

    # ------------------------------------------------------------------ CANCEL / QUERY

    def _cancel(self, msg: protocol.Incoming) -> None:
        if msg.request_ref is None:
            raise RequestError(
                "INVALID_COMMAND", "CANCEL needs a requestRef", {"field": "requestRef"}
            )
        cs = self.running.get(msg.request_ref)
        if cs is None:
            log.info(
                "CANCEL of an unknown or finished command ignored",
                extra={"request_ref": msg.request_ref},
            )
            return
        log.info("CANCEL", extra={"request_ref": msg.request_ref})
        self.abort(cs, "cancelled")

    def _query(self, msg: protocol.Incoming) -> None:
        ref = msg.request_ref
        if ref is None:
            raise RequestError(
                "INVALID_COMMAND", "QUERY needs a requestRef", {"field": "requestRef"}
            )
        result = answer_query(msg.body, self.devices, self.finished, self.max_frame, self.telemetry)
        self.emit(self.factory.response(ref, "completed", result=result, duration_ms=0))

    # ------------------------------------------------------------------ shutdown and status

    def in_flight(self) -> int:
        """Commands accepted and not yet answered."""
        return len(self.running)

    async def drain(self, grace: float) -> None:
        """Stop accepting; wait up to ``grace`` for running commands, then fail the rest."""
        self.accepting = False
        if self.running:
            log.info("waiting up to %.1fs for %d command(s)", grace, len(self.running))
        await self._wait_running(grace)
        for cs in list(self.running.values()):
            self.abort(cs, "edge shutting down")
        await self._wait_running(max(1.0, grace))

    async def _wait_running(self, seconds: float) -> None:
        """Wait up to ``seconds`` until no command runs (a batch moves from job to job)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.running:
            waitables = [w for cs in self.running.values() for w in self.executor.waitables(cs)]
            left = deadline - loop.time()
            if not waitables or left <= 0:
                return
            await asyncio.wait(waitables, timeout=left)
