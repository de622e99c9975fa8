"""``edge-proxy probe``: talk to one device directly, as a field engineer checks the wiring."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge_proxy.config import Config
from edge_proxy.drivers import registry
from edge_proxy.errors import DriverError, EdgeProxyError


def _describe(exc: BaseException) -> str:
    if isinstance(exc, EdgeProxyError):
        details = f" {exc.details}" if exc.details else ""
        return f"{exc.code}: {exc.message}{details}"
    return f"{type(exc).__name__}: {exc}"


async def probe(config: Config, device_id: str, out: Callable[[str], None] = print) -> int:
    """Open the device's link, read its readable points, print them; 0 if all were read."""
    dev = next((d for d in config.devices if d.id == device_id), None)
    if dev is None:
        out(
            f"no device {device_id!r} in the config (devices: "
            f"{', '.join(d.id for d in config.devices)})"
        )
        return 2
    profile = config.profiles[dev.profile]
    link_cfg = config.link_of(dev)
    try:
        driver = registry.get(link_cfg.driver)
    except DriverError as exc:
        out(str(exc))
        return 2
    link = driver.link_class(config.link_name_of(dev), link_cfg)
    adapter = driver.device_class(link, dev, profile)
    where = f"{link_cfg.host}:{link_cfg.port}" if link_cfg.host else str(link_cfg.port or "")
    out(f"probing {dev.id} ({link_cfg.driver} {where}, unit {adapter.unit})")
    timeout = (link_cfg.connect_timeout or link_cfg.timeout) + 1.0
    try:
        await asyncio.wait_for(link.open(), timeout)
    except (EdgeProxyError, OSError, TimeoutError) as exc:
        out(f"FAILED to connect: {_describe(exc)}")
        await link.close()
        return 1
    failed = 0
    rows: list[tuple[str, str, str, str]] = []
    try:
        names = [n for n, p in profile.points.items() if p.readable]
        if not names:
            await asyncio.wait_for(adapter.health(), timeout * 2)
            out("connected; the profile has no readable points (health check passed)")
            return 0
        for name in names:
            point = profile.points[name]
            try:
                values: dict[str, Any] = await asyncio.wait_for(adapter.read([name]), timeout)
                value = repr(values[name])
            except (EdgeProxyError, OSError, TimeoutError) as exc:
                value = f"FAILED {_describe(exc)}"
                failed += 1
            rows.append((name, f"{point.table} {point.address}", value, point.unit or ""))
    finally:
        await link.close()
    width = [max(len(r[i]) for r in [*rows, ("point", "where", "value", "unit")]) for i in range(4)]
    for row in [("point", "where", "value", "unit"), *rows]:
        out("  ".join(c.ljust(w) for c, w in zip(row, width, strict=True)).rstrip())
    if failed:
        out(f"{failed} of {len(rows)} point(s) could not be read")
        return 1
    return 0
