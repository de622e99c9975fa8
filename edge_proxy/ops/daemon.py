"""Wiring: config -> links, devices, engine, session; start, run, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from typing import Any

from edge_proxy import __version__
from edge_proxy.config import Config, DeviceConfig
from edge_proxy.drivers import Device, DriverRegistry, registry
from edge_proxy.errors import EdgeProxyError
from edge_proxy.ops.control import ControlServer
from edge_proxy.ops.metrics import Metrics
from edge_proxy.runtime.devices import BACKGROUND, DeviceRuntime, LinkRuntime
from edge_proxy.runtime.engine import Engine
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.runtime.session import Session
from edge_proxy.runtime.spool import Spool
from edge_proxy.wire import framing
from edge_proxy.wire import messages as protocol

log = logging.getLogger(__name__)


class ReloadRefused(EdgeProxyError):
    """A new configuration that cannot be applied without a restart."""


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
        for dev_cfg in config.devices:
            self.devices[dev_cfg.id] = self._build_device(dev_cfg)
        self.engine.devices = dict(self.devices)
        self.session = Session(
            config.gateway,
            self.factory,
            self.outbox,
            self.engine.handle_frame,
            self.register_message,
            self.status,
        )
        self._polls: dict[str, asyncio.Task[None]] = {}
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
        self.spool: Spool | None = None
        if config.gateway.outbox.spool:
            self.spool = Spool(
                config.gateway.outbox.spool,
                keep=config.commands.dedup_window,
                keep_max=config.commands.dedup_max,
            )
            self.engine.journal = self.spool
            self.outbox.on_done = self.spool.sent
            now = time.monotonic()
            pending = self.spool.recover(self.factory)
            # repeats of commands answered before the restart are answered, not run again
            for age, msg, targets in self.spool.delivered():
                self._remember(msg, targets, now - age)
            for spool_id, msg, targets in pending:
                self.outbox.put(msg, spool_id)
                self._remember(msg, targets, now)
            # from here on the outbox sends a spooled message only once its row is committed
            self.outbox.mark_durable(self.spool.committed)
            self.spool.on_commit = self.outbox.mark_durable

    def _remember(self, msg: dict[str, Any], targets: list[str], at: float) -> None:
        ref = msg.get("requestRef")
        if isinstance(ref, str):
            self.engine.finished.add(ref, msg, targets, framing.size(msg), at=at)

    def _build_device(self, dev_cfg: DeviceConfig) -> DeviceRuntime:
        profile = self.config.profiles[dev_cfg.profile]
        if not dev_cfg.enabled:
            return DeviceRuntime(dev_cfg, profile, None, None, self._on_state)
        link_cfg = self.config.link_of(dev_cfg)
        link_name = self.config.link_name_of(dev_cfg)
        driver = self.drivers.get(link_cfg.driver)
        key = driver.share_key(link_name, link_cfg)
        runtime = self.links.get(key)
        if runtime is None:
            link = driver.link_class(link_name, link_cfg)
            runtime = LinkRuntime(
                link_name,
                driver,
                link,
                link_cfg,
                max_queued=self.config.commands.max_queued_per_link,
                aging=self.config.commands.aging,
            )
            self.links[key] = runtime
        adapter: Device = driver.device_class(runtime.link, dev_cfg, profile)
        device = DeviceRuntime(dev_cfg, profile, runtime, adapter, self._on_state)
        runtime.devices[dev_cfg.id] = device
        return device

    # ------------------------------------------------------------------ outputs

    def emit(self, msg: dict[str, Any]) -> None:
        """Queue a message for the Gateway (or hand a local command's message to its caller)."""
        if self.control is not None and self.control.route(msg):
            return
        spool_id = msg.get("_spool_id")
        self.outbox.put(msg, spool_id if isinstance(spool_id, int) else None)

    def _on_state(self, dev: DeviceRuntime, new: str, previous: str | None, reason: str) -> None:
        self.emit(self.factory.device_status(dev.id, dev.config.type, new, previous, reason))

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
        s = self.session
        return {
            "edge": self.config.edge.id,
            "gateway": {
                "url": self.config.gateway.url,
                "state": s.state,
                "connects": s.connects,
                "failures": s.failures,
                "lastError": s.last_error,
            },
            "outbox": {
                "messages": self.outbox.count,
                "bytes": self.outbox.bytes,
                "dropped": dict(self.outbox.dropped),
            },
            "inFlight": self.engine.in_flight(),
            "devices": [d.status() for d in self.devices.values()],
        }

    def status(self) -> dict[str, Any]:
        """The HEARTBEAT status block."""
        return {
            "devicesOnline": sum(1 for d in self.devices.values() if d.state == "online"),
            "devicesTotal": len(self.devices),
            "inFlight": self.engine.in_flight(),
            "outboxDepth": self.outbox.count,
        }

    # ------------------------------------------------------------------ lifecycle

    # ------------------------------------------------------------------ reload (SIGHUP)

    def _signature(self, config: Config, dev: DeviceConfig) -> tuple[object, ...]:
        """Everything that, when it changes, means the device must be restarted."""
        return (dev, config.profiles[dev.profile], config.link_of(dev), config.link_name_of(dev))

    async def reload(self, new: Config) -> dict[str, list[str]]:
        """Apply a new config: start added devices, stop removed ones, restart changed ones.

        Untouched devices keep their link (connection, queue and queued commands). Returns the
        ids per kind of change. Raises ReloadRefused for changes that need a restart.
        """
        old = self.config
        if new.edge.id != old.edge.id:
            raise ReloadRefused("edge.id changed: restart edge-proxy to take a new identity")
        before = {d.id: self._signature(old, d) for d in old.devices}
        after = {d.id: self._signature(new, d) for d in new.devices}
        removed = [i for i in before if i not in after]
        added = [i for i in after if i not in before]
        changed = [i for i in after if i in before and after[i] != before[i]]
        for dev_id in removed + changed:
            await self._stop_device(dev_id, removed=dev_id in removed)
        self.config = new
        new_devices = {d.id: d for d in new.devices}
        for dev_id in added + changed:
            dev = self._build_device(new_devices[dev_id])
            self.devices[dev_id] = dev
            if self.metrics is not None:
                dev.on_latency = self.metrics.observe_transaction
            self._start_device(dev)
            if dev_id in added:
                self._on_state(dev, dev.state, None, "added by a configuration reload")
        # keep the configured order of devices (QUERY, REGISTER)
        self.devices = {i: self.devices[i] for i in new_devices}
        self.engine.devices = dict(self.devices)
        self.engine.config = new.commands
        for link in self.links.values():
            link.max_queued = new.commands.max_queued_per_link
            link.aging = new.commands.aging
        if new.gateway != old.gateway:
            await self._restart_session()
        if new.metrics != old.metrics or new.control != old.control:
            log.warning("metrics and control settings change only at a restart")
        summary = {"added": added, "removed": removed, "changed": changed}
        log.info("configuration reloaded: %s", summary)
        return summary

    async def _stop_device(self, dev_id: str, *, removed: bool) -> None:
        dev = self.devices.pop(dev_id)
        await dev.stop_health()
        poll = self._polls.pop(dev_id, None)
        if poll is not None:
            poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poll
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
        if dev.profile.poll is not None and dev.link is not None:
            self._polls[dev.id] = asyncio.create_task(self._poll(dev), name=f"poll:{dev.id}")

    async def _restart_session(self) -> None:
        log.info("gateway settings changed: reconnecting")
        await self.session.stop()
        if self._session_task is not None:
            self._session_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._session_task
        self.session = Session(
            self.config.gateway,
            self.factory,
            self.outbox,
            self.engine.handle_frame,
            self.register_message,
            self.status,
        )
        self._session_task = asyncio.create_task(self.session.run(), name="gateway-session")

    async def start(self) -> None:
        """Start link workers, device health loops, pollers and the Gateway session."""
        if self.control is not None:
            try:
                await self.control.start()
            except OSError as exc:  # the daemon runs on without it; say why
                log.error("control socket %s unavailable: %s", self.control.path, exc)
                self.control = None
        if self.metrics is not None and self.config.metrics.address is not None:
            host, port = self.config.metrics.address
            self.metrics_port = self.metrics.start(host, port)
        for dev in self.devices.values():
            self._start_device(dev)
        self._session_task = asyncio.create_task(self.session.run(), name="gateway-session")

    async def _poll(self, dev: DeviceRuntime) -> None:
        assert dev.profile.poll is not None and dev.link is not None
        poll = dev.profile.poll
        while True:
            await asyncio.sleep(poll.interval)
            if dev.state != "online":
                continue
            try:
                values = await dev.link.run(
                    dev, BACKGROUND, lambda adapter: adapter.read(poll.points)
                )
            except (EdgeProxyError, OSError, TimeoutError) as exc:
                log.debug("poll failed: %s", exc, extra={"device_id": dev.id})
                continue
            self.emit(self.factory.telemetry(dev.id, values))

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking commands, finish in-flight ones within the grace, close everything."""
        grace = self.config.commands.shutdown_grace if grace is None else grace
        log.info("shutting down (grace %.1fs)", grace)
        await self.engine.drain(grace)
        await self.session.stop()
        tasks = [*self._polls.values(), self._session_task]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._polls.clear()
        self._session_task = None
        for dev in self.devices.values():
            await dev.stop_health()
        for link in self.links.values():
            await link.close()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.control is not None:
            await self.control.stop()
        if self.spool is not None:
            self.spool.close()
        self.stopped.set()
        log.info("stopped")
