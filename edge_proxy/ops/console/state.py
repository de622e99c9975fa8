"""The console's state inside the daemon: history, recent commands, log lines, live streams.

:class:`Console` is what the daemon wires in: its hooks (:meth:`Console.observe` for every
emitted message, :meth:`Console.on_sample` for every poll cycle, :meth:`Console.on_change` for
state changes) only append to bounded buffers or offer an event to the live streams; the live
tick (once a second, only while a stream is open) builds each followed page's data once and
offers the same bytes to every stream that follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from edge_proxy.config.console import ConsoleConfig
from edge_proxy.core.report import Sample
from edge_proxy.ops.console import views
from edge_proxy.ops.console.auth import Sessions
from edge_proxy.ops.console.broadcast import Broadcaster
from edge_proxy.ops.console.commands import CommandLog, describe_parts
from edge_proxy.ops.console.history import History
from edge_proxy.ops.console.logbuffer import LogRing
from edge_proxy.wire import framing
from edge_proxy.wire.names import CONSOLE_PREFIX, PRIORITIES, VERSION

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between live updates of the followed pages
CHANGE_BATCH = 0.1  # state changes within this time go out as one event (a link's devices)
MAX_PENDING_CHANGES = 1000
CALL_MARGIN = 2.0  # a console command's answer is awaited its timeout plus this
MAX_TIMEOUT_MS = 60_000


class BadCommand(ValueError):
    """A tester request that is not even a command (the engine checks the rest)."""


def command_frame(edge_id: str, ref: str, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The COMMAND frame of a tester request, and a line describing it.

    ``body``: ``{"device", "kind": "command"|"read"|"write", "code", "params", "points",
    "values", "timeoutMs", "priority"}``. Only the shape is checked here; validation against
    the profile is the engine's, exactly as for a Gateway command.
    """
    dev = body.get("device")
    if not isinstance(dev, str) or not dev or len(dev) > 200:
        raise BadCommand("device must be a device id")
    kind = body.get("kind", "command")
    command: dict[str, Any] = {"commandType": "SIMPLE"}
    if kind == "command":
        code = body.get("code")
        params = body.get("params", {})
        if not isinstance(code, str) or not code:
            raise BadCommand("code must name a profile command")
        if not isinstance(params, dict):
            raise BadCommand("params must be an object")
        command.update(commandCode=code, parameters=params)
    elif kind == "read":
        points = body.get("points")
        if not isinstance(points, list) or not all(isinstance(p, str) for p in points):
            raise BadCommand("points must be a list of point names")
        command.update(operationType="read", parameters={"points": points})
    elif kind == "write":
        values = body.get("values")
        if not isinstance(values, dict) or not values:
            raise BadCommand("values must be an object of point: value")
        command.update(operationType="write", parameters={"values": values})
    else:
        raise BadCommand("kind must be command, read or write")
    timeout = body.get("timeoutMs", 5000)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, int)
        or not 1 <= timeout <= MAX_TIMEOUT_MS
    ):
        raise BadCommand(f"timeoutMs must be a whole number from 1 to {MAX_TIMEOUT_MS}")
    priority = body.get("priority", "high")
    if priority not in PRIORITIES:
        raise BadCommand(f"priority must be one of {', '.join(PRIORITIES)}")
    frame = {
        "type": "COMMAND",
        "requestRef": ref,
        "targetClientId": f"{edge_id}:{dev}",
        "command": command,
        "timeout": timeout,
        "priority": priority,
        "version": VERSION,
    }
    return frame, describe_parts("SIMPLE", command.get("commandCode"), command.get("operationType"))


class Console:
    """Everything the console keeps and pushes; the HTTP side is in :mod:`.server`."""

    def __init__(self, rt: views.RuntimeView, config: ConsoleConfig) -> None:
        self.rt = rt
        self.config = config
        self.history = History(config.history)
        self.commands = CommandLog()
        self.logs = LogRing(config.log_lines)
        self.streams = Broadcaster(config.max_clients)
        token = config.token.get_secret_value() if config.token is not None else None
        self.sessions = Sessions(token)
        self.calls: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._marks: dict[str, float] = {}  # device topic -> newest sample time sent
        self._log_mark = 0
        self._ticker: asyncio.Task[None] | None = None
        self._changes: list[dict[str, Any]] = []
        self._changes_flush: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ hooks (hot paths)

    def observe(self, msg: dict[str, Any]) -> bool:
        """Every emitted message: file command messages; True for a console command's own
        (delivered to its caller here: it never goes to the Gateway)."""
        entry = self.commands.observe(msg, self.rt.engine.running)
        if entry is None:
            return False
        if self.streams.clients:
            data = None
            for dev_id in entry.devices:
                topic = f"device:{dev_id}"
                if self.streams.followers(topic):
                    data = data or views.dumps(entry.view())
                    self.streams.publish(topic, "command", data)
        ref = msg["requestRef"]
        if not ref.startswith(CONSOLE_PREFIX):
            return False
        queue = self.calls.get(ref)
        if queue is not None:
            queue.put_nowait({k: v for k, v in msg.items() if not k.startswith("_")})
        return True

    def on_sample(self, dev_id: str, group: str, sample: Sample) -> None:
        """Telemetry hook: keep the cycle's numbers for the charts."""
        self.history.add(dev_id, group, sample)

    def on_change(self, change: dict[str, Any]) -> None:
        """Activity hook: a device or the Gateway link changed state; tell every open page.

        Changes are sent within CHANGE_BATCH, those of one burst (a link going down with its
        fifty devices) as one event: a burst never fills a stream's queue.
        """
        if not self.streams.clients:
            return
        self._changes.append(change)
        del self._changes[:-MAX_PENDING_CHANGES]
        if self._changes_flush is None:
            loop = asyncio.get_running_loop()
            self._changes_flush = loop.call_later(CHANGE_BATCH, self._flush_changes)

    def _flush_changes(self) -> None:
        self._changes_flush = None
        changes, self._changes = self._changes, []
        if changes:
            self.streams.publish("changes", "changes", views.dumps(changes))

    def keep_only(self, dev_ids: set[str]) -> None:
        """After a reload: forget removed devices."""
        self.history.keep_only(dev_ids)
        self.commands.keep_only(dev_ids)

    # ------------------------------------------------------------------ commands

    async def call(self, body: dict[str, Any], peer: str) -> dict[str, Any]:
        """Run a tester command through the engine; every message about it, terminal last."""
        ref = f"{CONSOLE_PREFIX}{uuid.uuid4().hex[:12]}"
        frame, what = command_frame(self.rt.config.edge.id, ref, body)
        dev = body["device"]
        params = frame["command"].get("parameters", {})
        self.commands.begin(ref, [dev], what, params)
        log.info(
            "console command %s on %s from %s",
            what,
            dev,
            peer,
            extra={"request_ref": ref, "device_id": dev},
        )
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.calls[ref] = queue
        messages: list[dict[str, Any]] = []
        try:
            self.rt.engine.handle_frame(json.dumps(frame))
            deadline = time.monotonic() + frame["timeout"] / 1000 + CALL_MARGIN
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                messages.append(msg)
                if framing.is_terminal(msg):
                    break
        finally:
            del self.calls[ref]
        terminal = messages[-1] if messages and framing.is_terminal(messages[-1]) else None
        status = None
        if terminal is not None:
            status = terminal.get("status") or terminal.get("code")
        return {"ref": ref, "command": what, "status": status, "messages": messages}

    # ------------------------------------------------------------------ live updates

    def start(self) -> None:
        """Keep log lines and start the live tick."""
        self.logs.install()
        self._ticker = asyncio.create_task(self._tick_loop(), name="console-tick")

    async def stop(self) -> None:
        """End every stream and the tick."""
        self.logs.remove()
        if self._changes_flush is not None:
            self._changes_flush.cancel()
            self._changes_flush = None
        self.streams.close_all()
        task, self._ticker = self._ticker, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                self.tick()
            except Exception:  # the console must never take the daemon down
                log.exception("console: live update failed")

    def tick(self) -> None:
        """Build each followed page's update once and offer it to its streams."""
        if not self.streams.clients:
            self._marks.clear()
            return
        topics = self.streams.topics()
        rt = self.rt
        if "overview" in topics:
            self.streams.publish("overview", "overview", views.dumps(views.overview(rt)))
        if "devices" in topics:
            self.streams.publish("devices", "devices", views.dumps(views.device_rows(rt)))
        now = time.time()
        for topic in topics:
            if not topic.startswith("device:"):
                continue
            dev_id = topic[len("device:") :]
            after = self._marks.get(topic, now - 2 * TICK)
            live = views.device_live(rt, dev_id, self.history, after)
            if live is None:
                continue
            self._marks[topic] = self.history.last_time(dev_id) or after
            self.streams.publish(topic, "device", views.dumps(live))
        for topic in [t for t in self._marks if t not in topics]:
            del self._marks[topic]
        if "logs" in topics and self.logs.last_seq > self._log_mark:
            lines = self.logs.since(self._log_mark)
            self._log_mark = self.logs.last_seq
            if lines:
                self.streams.publish("logs", "logs", views.dumps(lines))
        elif "logs" not in topics:
            self._log_mark = self.logs.last_seq
