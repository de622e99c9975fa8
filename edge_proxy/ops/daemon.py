"""Wiring: config -> links, devices, engine, session; start, run, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Hashable
from typing import Any

from edge_proxy import __version__
from edge_proxy.config import Config
from edge_proxy.drivers import DriverRegistry, registry
from edge_proxy.ops.activity import Activity
from edge_proxy.ops.console import Console, ConsoleServer
from edge_proxy.ops.control import ControlServer
from edge_proxy.ops.metrics import Metrics
from edge_proxy.ops.wiring import (
    ReloadRefused,
    StartupError,
    attach,
    build_device,
    build_failure,
    changes,
    heartbeat_status,
    open_spool,
    status_report,
    why,
)
from edge_proxy.runtime.devices import DeviceRuntime, LinkRuntime
from edge_proxy.runtime.engine import Engine
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.runtime.session import Session
from edge_proxy.runtime.telemetry import Telemetry
from edge_proxy.wire import messages as protocol

__all__ = ["Daemon", "ReloadRefused", "StartupError"]

log = logging.getLogger(__name__)


class Daemon:
    """One running edge: every link, device, the engine and the Gateway session."""

    def __init__(self, config: Config, drivers: DriverRegistry | None = None) -> None:
        self.config = config
        self.drivers = drivers or registry
        self.factory = protocol.MessageFactory(config.edge.id)
        self.outbox = Outbox(config.gateway.outbox.max_messages, config.gateway.outbox.max_bytes)
        self.links: dict[Hashable, LinkRuntime] = {}
        self.devices: dict[str, DeviceRuntime] = {}
        self.engine = Engine(
            config.edge.id,
            {},
            config.commands,
            self.factory,
            self.emit,
            config.gateway.max_frame,
        )
        self.engine.room = self.outbox
        for i, dev_cfg in enumerate(config.devices):
            try:
                device = build_device(self.drivers, dev_cfg, config, self.links, self._on_state)
            except Exception as exc:  # a driver's failure: name the device, not a traceback
                raise StartupError(build_failure(i, dev_cfg, exc)) from exc
            attach(device)
            self.devices[dev_cfg.id] = device
        self.engine.devices = dict(self.devices)
        #: recent state changes and the Gateway link's since-when (status and the console)
        self.activity = Activity()
        self.session = self._make_session(config)
        #: held while a reload runs; reloads (and stop) take turns
        self._reload_lock = asyncio.Lock()
        self._stopping = False
        self._session_task: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        self.control: ControlServer | None = None
        if config.control.enabled:
            self.control = ControlServer(
                config.control_socket(), self.engine.handle_frame, self.status_report
            )
        self.metrics: Metrics | None = None
        self.metrics_port: int | None = None
        if config.metrics.listen is not None:
            self.metrics = Metrics(self, config.metrics.stall_after)
            self.engine.on_terminal = self.metrics.observe_command
            for dev in self.devices.values():
                dev.on_latency = self.metrics.observe_transaction
        self.console: Console | None = None
        self.console_server: ConsoleServer | None = None
        self.console_port: int | None = None
        if config.console.address is not None:
            self.console = Console(self, config.console)
            self.console_server = ConsoleServer(self.console)
            self.activity.on_change = self.console.on_change
        self.spool = open_spool(config, self.factory, self.outbox, self.engine)
        self.telemetry = self._new_telemetry(config)

    def _new_telemetry(self, config: Config) -> Telemetry:
        """A collector for every device (the per-device seq goes on across a reload)."""
        old = getattr(self, "telemetry", None)
        telemetry = Telemetry(
            config, self.factory, self.emit, lambda: self.session.state == "online"
        )
        if old is not None:
            telemetry.seq = old.seq
        for dev in self.devices.values():
            telemetry.add_device(dev)
        self.engine.telemetry = telemetry
        self.engine.executor.on_written = telemetry.written
        metrics = getattr(self, "metrics", None)
        if metrics is not None:
            telemetry.on_cycle = metrics.observe_cycle
        console = getattr(self, "console", None)
        if console is not None:
            telemetry.on_sample = console.on_sample
        return telemetry

    def _make_session(self, config: Config) -> Session:
        """A Gateway session for ``config`` (not started); StartupError if TLS cannot load."""
        try:
            session = Session(
                config.gateway,
                self.factory,
                self.outbox,
                self.engine.handle_frame,
                self.register_message,
                self.status,
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            where = "gateway.tls" if config.gateway.tls is not None else "gateway"
            raise StartupError(f"{where}: cannot set up the Gateway connection: {exc}") from exc
        session.on_registered = self._registered
        return session

    def _registered(self) -> None:
        # after every REGISTER: the telemetry snapshots (of the collector of the moment)
        self.telemetry.gateway_connected()

    # ------------------------------------------------------------------ outputs

    def emit(self, msg: dict[str, Any]) -> None:
        """Queue a message for the Gateway (or hand a local command's message to its caller)."""
        if self.console is not None and self.console.observe(msg):
            return
        if self.control is not None and self.control.route(msg):
            return
        spool_id = msg.get("_spool_id")
        self.outbox.put(msg, spool_id if isinstance(spool_id, int) else None)

    def _on_state(self, dev: DeviceRuntime, new: str, previous: str | None, reason: str) -> None:
        self.emit(self.factory.device_status(dev.id, dev.config.type, new, previous, reason))
        self.activity.device_changed(dev.id, new, previous, reason)
        telemetry = getattr(self, "telemetry", None)  # not yet there while devices are built
        if telemetry is not None:
            telemetry.device_state(dev.id, new, previous)

    def register_message(self) -> dict[str, Any]:
        """REGISTER with every device and its state."""
        token = self.config.gateway.token
        return self.factory.register(
            self.config.edge.name,
            __version__,
            [d.status() for d in self.devices.values()],
            token.get_secret_value() if token else None,
            max_frame=self.config.gateway.max_frame,
        )

    def status_report(self) -> dict[str, Any]:
        """Everything `edge-proxy status` shows."""
        report = status_report(self.config, self.session, self.outbox, self.engine, self.devices)
        report["gateway"]["since"] = self.activity.gateway()["since"]
        report["changes"] = self.activity.recent(20)
        return report

    def status(self) -> dict[str, Any]:
        """The HEARTBEAT status block."""
        return heartbeat_status(self.devices.values(), self.engine, self.outbox)

    # ------------------------------------------------------------------ reload (SIGHUP)

    async def reload(self, new: Config) -> dict[str, list[str]]:
        """Apply a new config: start added devices, stop removed ones, restart changed ones.

        Untouched devices keep their link (connection, queue and queued commands). Returns the
        ids per kind of change. Raises ReloadRefused for changes that need a restart, and when
        a new device cannot be built: every new device (and a new Gateway session) is built
        before anything running is stopped, so a refused reload leaves the old config running.
        Reloads are serialized: one that arrives while another runs waits for it.
        """
        async with self._reload_lock:
            if self._stopping:
                raise ReloadRefused("edge-proxy is shutting down")
            return await self._reload(new)

    async def _reload(self, new: Config) -> dict[str, list[str]]:
        old = self.config
        if new.edge.id != old.edge.id:
            raise ReloadRefused("edge.id changed: restart edge-proxy to take a new identity")
        removed, added, changed = changes(old, new)
        going = {*removed, *changed}

        # 1. build: new links only where no untouched device keeps the old one running
        kept = {k: link for k, link in self.links.items() if set(link.devices) - going}
        fresh: dict[Hashable, LinkRuntime] = {}
        links = collections.ChainMap(fresh, kept)
        built: dict[str, DeviceRuntime] = {}
        for i, dev_cfg in enumerate(new.devices):
            if dev_cfg.id in added or dev_cfg.id in changed:
                try:
                    built[dev_cfg.id] = build_device(
                        self.drivers, dev_cfg, new, links, self._on_state
                    )
                except Exception as exc:
                    log.debug("building %s failed", dev_cfg.id, exc_info=True)
                    raise ReloadRefused(build_failure(i, dev_cfg, exc)) from exc
        session = None
        if new.gateway != old.gateway:
            try:
                session = self._make_session(new)
            except StartupError as exc:
                raise ReloadRefused(exc.message) from exc

        # 2. swap: stop what goes, start what comes
        previous = {i: self.devices[i].state for i in changed}
        for dev_id in removed + changed:
            await self._stop_device(dev_id, removed=dev_id in removed)
        self.links.update(fresh)
        self.config = new
        for dev_id, dev in built.items():
            attach(dev)
            self.devices[dev_id] = dev
            if self.metrics is not None:
                dev.on_latency = self.metrics.observe_transaction
            self._start_device(dev)
            if dev_id in added:
                self._on_state(dev, dev.state, None, "added by a configuration reload")
            elif dev.state != previous[dev_id]:
                self._on_state(dev, dev.state, previous[dev_id], why(previous[dev_id], dev.state))
        # keep the configured order of devices (QUERY, REGISTER)
        self.devices = {d.id: self.devices[d.id] for d in new.devices}
        self.engine.devices = dict(self.devices)
        self.engine.config = new.commands
        # poll groups follow the new devices (reporters start over: snapshots come first)
        await self.telemetry.stop()
        self.telemetry = self._new_telemetry(new)
        self.telemetry.start()
        for link in self.links.values():
            link.max_queued = new.commands.max_queued_per_link
            link.aging = new.commands.aging
        if session is not None:
            await self._restart_session(session)
        if new.metrics != old.metrics or new.control != old.control or new.console != old.console:
            log.warning("metrics, control and console settings change only at a restart")
        if self.console is not None:
            self.console.keep_only(set(self.devices))
        summary = {"added": added, "removed": removed, "changed": changed}
        log.info("configuration reloaded: %s", summary)
        return summary

    async def _stop_device(self, dev_id: str, *, removed: bool) -> None:
        dev = self.devices.pop(dev_id)
        await dev.stop_health()
        link = dev.link
        if link is not None:
            link.devices.pop(dev_id, None)
            if not link.devices:
                for key, runtime in list(self.links.items()):
                    if runtime is link:
                        del self.links[key]
                await link.close()
        if removed:
            self.emit(
                self.factory.device_status(
                    dev_id, dev.config.type, "disabled", dev.state, "removed from configuration"
                )
            )

    def _start_device(self, dev: DeviceRuntime) -> None:
        if dev.link is not None:
            dev.link.start()
        dev.start_health()

    async def _restart_session(self, session: Session) -> None:
        log.info("gateway settings changed: reconnecting")
        await self.session.stop()
        if self._session_task is not None:
            self._session_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._session_task
        self.session = session
        self._session_task = asyncio.create_task(self.session.run(), name="gateway-session")

    async def start(self) -> None:
        """Start link workers, device health loops and the Gateway session."""
        if self.control is not None:
            try:
                await self.control.start()
            except OSError as exc:  # the daemon runs on without it; say why
                log.error("control socket %s unavailable: %s", self.control.path, exc)
                self.control = None
        if self.metrics is not None and self.config.metrics.address is not None:
            host, port = self.config.metrics.address
            try:
                self.metrics_port = self.metrics.start(host, port)
            except OSError as exc:  # the daemon runs on without it, as without the control socket
                log.error("metrics.listen %s unavailable: %s", self.config.metrics.listen, exc)
        await self._start_console()
        self.activity.start(lambda: self.session.state)
        for dev in self.devices.values():
            self._start_device(dev)
        self.telemetry.start()
        self._session_task = asyncio.create_task(self.session.run(), name="gateway-session")

    async def _start_console(self) -> None:
        address = self.config.console.address
        if self.console is None or self.console_server is None or address is None:
            return
        try:
            self.console_port = await self.console_server.start(*address)
        except OSError as exc:  # the daemon runs on without it, as without the metrics endpoint
            log.error("console.listen %s unavailable: %s", self.config.console.listen, exc)
            self.console = None
            self.console_server = None
            self.activity.on_change = None
            self.telemetry.on_sample = None
            return
        self.console.start()

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking commands, finish in-flight ones within the grace, close everything.

        A reload under way is finished first; none starts after this.
        """
        self._stopping = True
        async with self._reload_lock:
            await self._stop(grace)

    async def _stop(self, grace: float | None) -> None:
        grace = self.config.commands.shutdown_grace if grace is None else grace
        log.info("shutting down (grace %.1fs)", grace)
        await self.engine.drain(grace)
        await self.telemetry.stop()
        await self.session.stop()
        task = self._session_task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._session_task = None
        for dev in self.devices.values():
            await dev.stop_health()
        for link in self.links.values():
            await link.close()
        if self.metrics is not None:
            await self.metrics.stop()
        await self.activity.stop()
        if self.console is not None:
            await self.console.stop()
        if self.console_server is not None:
            await self.console_server.stop()
        if self.control is not None:
            await self.control.stop()
        if self.spool is not None:
            self.spool.close()
        self.stopped.set()
        log.info("stopped")
