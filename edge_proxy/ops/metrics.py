"""Prometheus metrics and a health check on a local HTTP endpoint (``metrics.listen``).

The endpoint runs in its own thread, so ``/healthz`` can still answer (503) when the event
loop is wedged: a loop task stamps the time every half second, and a stamp older than
``metrics.stall_after`` means the daemon is stuck. Most metrics are read from the daemon's own
counters at scrape time, so the hot path pays nothing for them; the two latency histograms are
observed as commands and transactions finish.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import Hashable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_proxy.runtime.devices import DeviceRuntime, LinkRuntime
from edge_proxy.runtime.engine import Engine
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.runtime.session import Session
from edge_proxy.runtime.telemetry import Telemetry
from edge_proxy.wire.names import CONSOLE_PREFIX, LOCAL_PREFIXES

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATES = ("connecting", "online", "offline", "disabled")


class RuntimeView(Protocol):
    """What metrics read of a running edge (the daemon provides it)."""

    session: Session
    outbox: Outbox
    engine: Engine
    devices: dict[str, DeviceRuntime]
    links: dict[Hashable, LinkRuntime]
    telemetry: Telemetry


class DaemonCollector(Collector):
    """Reads the daemon's counters at scrape time."""

    def __init__(
        self, daemon: RuntimeView, sources: collections.Counter[tuple[str, str, str]] | None = None
    ) -> None:
        self.daemon = daemon
        #: terminals of local commands by (type, status, source); the rest came from the Gateway
        self.sources = sources if sources is not None else collections.Counter()

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (runs in the HTTP thread: only reads, copies first)."""
        d = self.daemon
        session = d.session
        up = GaugeMetricFamily("edge_gateway_up", "1 while the Gateway session is open")
        up.add_metric([], 1.0 if session.state == "online" else 0.0)
        yield up
        connects = CounterMetricFamily("edge_gateway_connects", "Gateway connections made")
        connects.add_metric([], session.connects)
        yield connects
        failures = CounterMetricFamily(
            "edge_gateway_failures", "Gateway connection failures (each is followed by a retry)"
        )
        failures.add_metric([], session.failures)
        yield failures
        sent = CounterMetricFamily(
            "edge_messages_sent", "Messages sent to the Gateway", labels=["type"]
        )
        for mtype, n in dict(session.messages_out).items():
            sent.add_metric([mtype], n)
        yield sent
        received = CounterMetricFamily(
            "edge_messages_received", "Frames received from the Gateway", labels=["type"]
        )
        for key, n in dict(d.engine.counts).items():
            if key.startswith("in:"):
                received.add_metric([key[3:]], n)
        yield received
        depth = GaugeMetricFamily("edge_outbox_messages", "Messages waiting in the outbox")
        depth.add_metric([], d.outbox.count)
        yield depth
        size = GaugeMetricFamily("edge_outbox_bytes", "Bytes waiting in the outbox")
        size.add_metric([], d.outbox.bytes)
        yield size
        dropped = CounterMetricFamily("edge_outbox_dropped", "Messages dropped", labels=["type"])
        for mtype, n in dict(d.outbox.dropped).items():
            dropped.add_metric([mtype], n)
        yield dropped
        commands = CounterMetricFamily(
            "edge_commands",
            "Commands answered, by type and terminal status",
            labels=["command_type", "status", "source"],
        )
        rejected = CounterMetricFamily("edge_commands_rejected", "Rejected frames", labels=["code"])
        local = dict(self.sources)
        for (ctype, status, source), n in local.items():
            commands.add_metric([ctype, status, source], n)
        for key, n in dict(d.engine.counts).items():
            kind, _, rest = key.partition(":")
            if kind == "terminal":
                ctype, _, status = rest.partition(":")
                others = sum(v for (t, s, _), v in local.items() if t == ctype and s == status)
                commands.add_metric([ctype, status, "gateway"], max(0, n - others))
            elif kind == "rejected":
                rejected.add_metric([rest], n)
        yield commands
        yield rejected
        in_flight = GaugeMetricFamily("edge_commands_in_flight", "Commands accepted, unanswered")
        in_flight.add_metric([], d.engine.in_flight())
        yield in_flight
        yield from self._devices()
        yield from self._telemetry()

    def _telemetry(self) -> Iterator[Metric]:
        by_group = self.daemon.telemetry.counters_by_group()
        help_text = {
            "cycles": "Poll cycles run",
            "failures": "Poll cycles that failed (timeout, I/O error, ...)",
            "skipped": "Ticks skipped: the group's previous cycle was still running",
            "points_read": "Point values read by poll cycles",
            "reported": "Point values sent in telemetry messages",
            "suppressed": "Point values read and not sent (deadband, min_interval)",
        }
        for name, text in help_text.items():
            family = CounterMetricFamily(f"edge_telemetry_{name}", text, labels=["group"])
            for group, counts in by_group.items():
                family.add_metric([group], counts[name])
            yield family
        dropped = CounterMetricFamily(
            "edge_telemetry_dropped",
            "Telemetry messages dropped: by a full outbox, or held back while the Gateway was "
            "down (buffer: latest sends a snapshot instead)",
            labels=["why"],
        )
        dropped.add_metric(["outbox_full"], self.daemon.outbox.dropped.get("telemetry", 0))
        dropped.add_metric(["gateway_down"], self.daemon.telemetry.dropped_while_down)
        yield dropped

    def _devices(self) -> Iterator[Metric]:
        devices = list(self.daemon.devices.values())
        state = GaugeMetricFamily(
            "edge_device_state", "1 for the device's state", labels=["device", "state"]
        )
        counters = {
            name: CounterMetricFamily(f"edge_device_{name}", f"Device {name}", labels=["device"])
            for name in ("transactions", "failures", "timeouts", "reconnects")
        }
        for dev in devices:
            for st in STATES:
                state.add_metric([dev.id, st], 1.0 if dev.state == st else 0.0)
            values = dev.counters.as_dict()
            for name, family in counters.items():
                family.add_metric([dev.id], values[name])
        yield state
        yield from counters.values()
        queue = GaugeMetricFamily("edge_link_queue", "Commands waiting per link", labels=["link"])
        for link in list(self.daemon.links.values()):
            queue.add_metric([link.name], link.pending())
        yield queue


class Metrics:
    """The metrics registry, the histograms, and the HTTP endpoint."""

    def __init__(self, daemon: RuntimeView, stall_after: float = 5.0) -> None:
        self.daemon = daemon
        self.stall_after = stall_after
        self.registry = CollectorRegistry()
        self.sources: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.registry.register(DaemonCollector(daemon, self.sources))
        self.command_seconds = Histogram(
            "edge_command_duration_seconds",
            "Time from a COMMAND's arrival to its terminal message",
            ["command_type"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.cycle_seconds = Histogram(
            "edge_telemetry_cycle_seconds",
            "Time of one poll cycle of a group, all its reads included",
            ["group"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.transaction_seconds = Histogram(
            "edge_device_transaction_seconds",
            "Time of one device operation on its link",
            ["device"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.last_tick = time.monotonic()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ticker: asyncio.Task[None] | None = None

    def observe_command(self, command_type: str, status: str, ref: str, seconds: float) -> None:
        """Engine hook: a command got its terminal message (local ones counted by source)."""
        self.command_seconds.labels(command_type).observe(seconds)
        if ref.startswith(LOCAL_PREFIXES):
            source = "console" if ref.startswith(CONSOLE_PREFIX) else "local"
            self.sources[(command_type, status, source)] += 1

    def observe_cycle(self, group: str, seconds: float) -> None:
        """Record one poll cycle's duration."""
        self.cycle_seconds.labels(group).observe(seconds)

    def observe_transaction(self, device_id: str, seconds: float) -> None:
        """Device hook: one operation finished."""
        self.transaction_seconds.labels(device_id).observe(seconds)

    def healthy(self) -> tuple[bool, str]:
        """Whether /healthz should say 200, and why."""
        stalled = time.monotonic() - self.last_tick
        if stalled > self.stall_after:
            return False, f"event loop has not run for {stalled:.1f}s"
        state = self.daemon.session.state
        if state in ("online", "connecting", "backoff"):
            return True, f"gateway {state}"
        return False, f"gateway session {state}"

    async def _tick(self) -> None:
        while True:
            self.last_tick = time.monotonic()
            await asyncio.sleep(0.5)

    def start(self, host: str, port: int) -> int:
        """Serve /metrics and /healthz on host:port (port 0: any); returns the bound port."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(metrics.registry)
                    self._reply(200, body, CONTENT_TYPE)
                elif path == "/healthz":
                    ok, why = metrics.healthy()
                    self._reply(200 if ok else 503, (why + "\n").encode(), "text/plain")
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics: " + format, *args)

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="metrics-tick")
        bound = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics and /healthz", host, bound)
        return bound

    async def stop(self) -> None:
        """Stop the endpoint and the ticker."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.get_running_loop().run_in_executor(None, server.shutdown)
            server.server_close()
