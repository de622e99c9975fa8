"""The daemon's wiring: building devices and links from a config, the spool, status blocks.

Functions, not methods, so that a reload can build everything new before it swaps anything,
and so that the daemon itself stays the short list of what runs.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Hashable, Iterable, Mapping, MutableMapping
from typing import Any

from edge_proxy.config import Config, DeviceConfig
from edge_proxy.drivers import Device, DriverRegistry
from edge_proxy.errors import EdgeProxyError
from edge_proxy.runtime.devices import DeviceRuntime, LinkRuntime, StateListener
from edge_proxy.runtime.engine import Engine
from edge_proxy.runtime.outbox import Outbox
from edge_proxy.runtime.queries import device_status
from edge_proxy.runtime.session import Session
from edge_proxy.runtime.spool import Spool
from edge_proxy.wire import framing
from edge_proxy.wire import messages as protocol

log = logging.getLogger(__name__)


class ReloadRefused(EdgeProxyError):
    """A new configuration that cannot be applied without a restart."""


class StartupError(EdgeProxyError):
    """The daemon cannot start: a spool, TLS file or device the config names cannot be set up."""


def open_spool(
    config: Config, factory: protocol.MessageFactory, outbox: Outbox, engine: Engine
) -> Spool | None:
    """The on-disk spool when configured, recovered: unsent terminals back in the outbox.

    Commands a crash left unanswered get their "edge restarted" terminal; terminals delivered
    before the restart are remembered for de-duplication. StartupError if it cannot open.
    """
    path = config.gateway.outbox.spool
    if not path:
        return None
    try:
        spool = Spool(path, keep=config.commands.dedup_window, keep_max=config.commands.dedup_max)
    except (OSError, sqlite3.Error) as exc:
        raise StartupError(f"gateway.outbox.spool: cannot open {path}: {exc}") from exc
    engine.journal = spool
    outbox.on_done = spool.sent
    now = time.monotonic()
    pending = spool.recover(factory)
    # repeats of commands answered before the restart are answered, not run again
    for age, msg, targets in spool.delivered():
        _remember(engine, msg, targets, now - age)
    for spool_id, msg, targets in pending:
        outbox.put(msg, spool_id)
        _remember(engine, msg, targets, now)
    # from here on the outbox sends a spooled message only once its row is committed
    outbox.mark_durable(spool.committed)
    spool.on_commit = outbox.mark_durable
    return spool


def _remember(engine: Engine, msg: dict[str, Any], targets: list[str], at: float) -> None:
    ref = msg.get("requestRef")
    if isinstance(ref, str):
        engine.finished.add(ref, framing.encode(msg), targets, at=at)


def status_report(
    config: Config,
    session: Session,
    outbox: Outbox,
    engine: Engine,
    devices: Mapping[str, DeviceRuntime],
) -> dict[str, Any]:
    """Everything `edge-proxy status` shows."""
    return {
        "edge": config.edge.id,
        "gateway": {
            "url": config.gateway.url,
            "state": session.state,
            "connects": session.connects,
            "failures": session.failures,
            "lastError": session.last_error,
        },
        "outbox": {
            "messages": outbox.count,
            "bytes": outbox.bytes,
            "dropped": dict(outbox.dropped),
        },
        "inFlight": engine.in_flight(),
        "devices": [device_status(d, engine.telemetry) for d in devices.values()],
    }


def heartbeat_status(
    devices: Iterable[DeviceRuntime], engine: Engine, outbox: Outbox
) -> dict[str, Any]:
    """The HEARTBEAT status block."""
    devices = list(devices)
    return {
        "devicesOnline": sum(1 for d in devices if d.state == "online"),
        "devicesTotal": len(devices),
        "inFlight": engine.in_flight(),
        "outboxDepth": outbox.count,
    }


def build_device(
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


def changes(old: Config, new: Config) -> tuple[list[str], list[str], list[str]]:
    """The ids of the devices a reload removes, adds and restarts (changed)."""
    before = {d.id: signature(old, d) for d in old.devices}
    after = {d.id: signature(new, d) for d in new.devices}
    removed = [i for i in before if i not in after]
    added = [i for i in after if i not in before]
    changed = [i for i in after if i in before and after[i] != before[i]]
    return removed, added, changed


def signature(config: Config, dev: DeviceConfig) -> tuple[object, ...]:
    """Everything that, when it changes, means the device must be restarted."""
    return (dev, config.profiles[dev.profile], config.link_of(dev), config.link_name_of(dev))


def attach(device: DeviceRuntime) -> None:
    """Put a built device on its link's list of devices."""
    if device.link is not None:
        device.link.devices[device.id] = device


def build_failure(index: int, dev_cfg: DeviceConfig, exc: BaseException) -> str:
    """The message naming a device that cannot be set up."""
    return f"devices[{index}] ({dev_cfg.id}): cannot be set up: {str(exc) or type(exc).__name__}"


def why(previous: str, new: str) -> str:
    """The reason a reload gives for a restarted device's new state."""
    if new == "disabled":
        return "disabled by a configuration reload"
    if previous == "disabled":
        return "enabled by a configuration reload"
    return "restarted by a configuration reload"
