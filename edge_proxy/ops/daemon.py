"""Wiring: config -> links, devices, engine, session; start, run, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import time
from collections.abc import Hashable, MutableMapping
from typing import Any

from edge_proxy import __version__
from edge_proxy.config import Config, DeviceConfig
from edge_proxy.drivers import Device, DriverRegistry, registry
from edge_proxy.errors import EdgeProxyError
from edge_proxy.ops.control import ControlServer
from edge_proxy.ops.metrics import Metrics
from edge_proxy.runtime.devices import DeviceRuntime, LinkRuntime, StateListener
from edge_proxy.runtime.engine import Engine
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.runtime.session import Session
from edge_proxy.runtime.spool import Spool
from edge_proxy.wire import framing
from edge_proxy.wire import messages as protocol

log = logging.getLogger(__name__)


class ReloadRefused(EdgeProxyError):
    """A new configuration that cannot be applied without a restart."""


class StartupError(EdgeProxyError):
    """The daemon cannot start: a spool, TLS file or device the config names cannot be set up."""


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
                device = _build_device(self.drivers, dev_cfg, config, self.links, self._on_state)
            except Exception as exc:  # a driver's failure: name the device, not a traceback
                raise StartupError(_build_failure(i, dev_cfg, exc)) from exc
            _attach(device)
            self.devices[dev_cfg.id] = device
        self.engine.devices = dict(self.devices)
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
        self.spool: Spool | None = None
        if config.gateway.outbox.spool:
            try:
                self.spool = Spool(
                    config.gateway.outbox.spool,
                    keep=config.commands.dedup_window,
                    keep_max=config.commands.dedup_max,
                )
            except (OSError, sqlite3.Error) as exc:
                raise StartupError(
                    f"gateway.outbox.spool: cannot open {config.gateway.outbox.spool}: {exc}"
                ) from exc
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

    def _make_session(self, config: Config) -> Session:
        """A Gateway session for ``config`` (not started); StartupError if TLS cannot load."""
        try:
            return Session(
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
        removed, added, changed = _changes(old, new)
        going = {*removed, *changed}

        # 1. build: new links only where no untouched device keeps the old one running
        kept = {k: link for k, link in self.links.items() if set(link.devices) - going}
        fresh: dict[Hashable, LinkRuntime] = {}
        links = collections.ChainMap(fresh, kept)
        built: dict[str, DeviceRuntime] = {}
        for i, dev_cfg in enumerate(new.devices):
            if dev_cfg.id in added or dev_cfg.id in changed:
                try:
                    built[dev_cfg.id] = _build_device(
                        self.drivers, dev_cfg, new, links, self._on_state
                    )
                except Exception as exc:
                    log.debug("building %s failed", dev_cfg.id, exc_info=True)
                    raise ReloadRefused(_build_failure(i, dev_cfg, exc)) from exc
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
            _attach(dev)
            self.devices[dev_id] = dev
            if self.metrics is not None:
                dev.on_latency = self.metrics.observe_transaction
            self._start_device(dev)
            if dev_id in added:
                self._on_state(dev, dev.state, None, "added by a configuration reload")
            elif dev.state != previous[dev_id]:
                self._on_state(dev, dev.state, previous[dev_id], _why(previous[dev_id], dev.state))
        # keep the configured order of devices (QUERY, REGISTER)
        self.devices = {d.id: self.devices[d.id] for d in new.devices}
        self.engine.devices = dict(self.devices)
        self.engine.config = new.commands
        for link in self.links.values():
            link.max_queued = new.commands.max_queued_per_link
            link.aging = new.commands.aging
        if session is not None:
            await self._restart_session(session)
        if new.metrics != old.metrics or new.control != old.control:
            log.warning("metrics and control settings change only at a restart")
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
        for dev in self.devices.values():
            self._start_device(dev)
        self._session_task = asyncio.create_task(self.session.run(), name="gateway-session")

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
        if self.control is not None:
            await self.control.stop()
        if self.spool is not None:
            self.spool.close()
        self.stopped.set()
        log.info("stopped")


def _build_device(
    drivers: DriverRegistry,
    dev_cfg: DeviceConfig,
    config: Config,
    links: MutableMapping[Hashable, LinkRuntime],
    on_state: StateListener,
) -> DeviceRuntime:
    """A device's runtime, not yet attached to its link nor started.

    Its link is taken from ``links`` by the driver's share key, or made and put there.
    Nothing running is touched, so a reload can build all its devices before it swaps.
    """
    profile = config.profiles[dev_cfg.profile]
    if not dev_cfg.enabled:
        return DeviceRuntime(dev_cfg, profile, None, None, on_state)
    link_cfg = config.link_of(dev_cfg)
    link_name = config.link_name_of(dev_cfg)
    driver = drivers.get(link_cfg.driver)
    key = driver.share_key(link_name, link_cfg)
    runtime = links.get(key)
    if runtime is None:
        link = driver.link_class(link_name, link_cfg)
        runtime = LinkRuntime(
            link_name,
            driver,
            link,
            link_cfg,
            max_queued=config.commands.max_queued_per_link,
            aging=config.commands.aging,
        )
        links[key] = runtime
    adapter: Device = driver.device_class(runtime.link, dev_cfg, profile)
    return DeviceRuntime(dev_cfg, profile, runtime, adapter, on_state)


def _changes(old: Config, new: Config) -> tuple[list[str], list[str], list[str]]:
    """The ids of the devices a reload removes, adds and restarts (changed)."""
    before = {d.id: _signature(old, d) for d in old.devices}
    after = {d.id: _signature(new, d) for d in new.devices}
    removed = [i for i in before if i not in after]
    added = [i for i in after if i not in before]
    changed = [i for i in after if i in before and after[i] != before[i]]
    return removed, added, changed


def _signature(config: Config, dev: DeviceConfig) -> tuple[object, ...]:
    """Everything that, when it changes, means the device must be restarted."""
    return (dev, config.profiles[dev.profile], config.link_of(dev), config.link_name_of(dev))


def _attach(device: DeviceRuntime) -> None:
    """Put a built device on its link's list of devices."""
    if device.link is not None:
        device.link.devices[device.id] = device


def _build_failure(index: int, dev_cfg: DeviceConfig, exc: BaseException) -> str:
    return f"devices[{index}] ({dev_cfg.id}): cannot be set up: {str(exc) or type(exc).__name__}"


def _why(previous: str, new: str) -> str:
    """The reason a reload gives for a restarted device's new state."""
    if new == "disabled":
        return "disabled by a configuration reload"
    if previous == "disabled":
        return "enabled by a configuration reload"
    return "restarted by a configuration reload"
