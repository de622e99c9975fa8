"""Wiring: config -> links, devices, engine, session; start, run, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from typing import Any

from . import __version__, protocol
from .config import Config, DeviceConfig
from .devices import BACKGROUND, DeviceRuntime, LinkRuntime
from .drivers import Device, DriverRegistry, registry
from .engine import Engine
from .errors import EdgeProxyError
from .session import Outbox, Session
from .spool import Spool

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
            config.gateway.max_message_size,
        )
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
        self._tasks: list[asyncio.Task[None]] = []
        self.stopped = asyncio.Event()
        self.spool: Spool | None = None
        if config.gateway.outbox.spool:
            self.spool = Spool(config.gateway.outbox.spool)
            self.engine.journal = self.spool
            self.outbox.on_done = self.spool.sent
            now = time.monotonic()
            for spool_id, msg in self.spool.recover(self.factory):
                self.outbox.put(msg, spool_id)
                ref = msg.get("requestRef")
                if isinstance(ref, str):  # a repeat of it is answered, not run again
                    self.engine.finished[ref] = (now, {**msg, "_targets": []})

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
        """Queue a message for the Gateway."""
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
        )

    def status(self) -> dict[str, Any]:
        """The HEARTBEAT status block."""
        return {
            "devicesOnline": sum(1 for d in self.devices.values() if d.state == "online"),
            "devicesTotal": len(self.devices),
            "inFlight": self.engine.in_flight(),
            "outboxDepth": self.outbox.count,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start link workers, device health loops, pollers and the Gateway session."""
        for link in self.links.values():
            link.start()
        for dev in self.devices.values():
            dev.start_health()
            if dev.profile.poll is not None and dev.link is not None:
                self._tasks.append(asyncio.create_task(self._poll(dev), name=f"poll:{dev.id}"))
        self._tasks.append(asyncio.create_task(self.session.run(), name="gateway-session"))

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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        for dev in self.devices.values():
            await dev.stop_health()
        for link in self.links.values():
            await link.close()
        if self.spool is not None:
            self.spool.close()
        self.stopped.set()
        log.info("stopped")
