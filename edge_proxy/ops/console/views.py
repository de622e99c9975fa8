"""What each console page shows, assembled from the running daemon as plain JSON-able data.

Read-only and cheap: nothing here touches a bus or waits; a page's first load and each live
tick call these on the event loop. Devices are sorted by state so the broken ones come first.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from edge_proxy import __version__
from edge_proxy.config import Config, ProfileConfig
from edge_proxy.ops.activity import Activity
from edge_proxy.ops.console.commands import CommandLog
from edge_proxy.ops.console.history import History
from edge_proxy.ops.logsetup import REDACTOR, Redactor
from edge_proxy.ops.metrics import RuntimeView as MetricsView
from edge_proxy.runtime.devices import DeviceRuntime
from edge_proxy.runtime.telemetry import Telemetry
from edge_proxy.wire.messages import epoch_timestamp

#: broken first: offline, then connecting, online, and disabled last
STATE_ORDER = {"offline": 0, "connecting": 1, "online": 2, "disabled": 3}
NUMERIC_TYPES = frozenset(
    {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"}
)


class RuntimeView(MetricsView, Protocol):
    """What the console reads of a running edge: what metrics read, its config and activity."""

    config: Config
    activity: Activity


def redact_url(url: str) -> str:
    """A URL without the password of its user part (``ws://user:***@host``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def overview(rt: RuntimeView) -> dict[str, Any]:
    """The overview page: the edge, the Gateway link, outbox, commands, devices, changes."""
    cfg = rt.config
    devices = list(rt.devices.values())
    states = collections.Counter(d.state for d in devices)
    session = rt.session
    dropped = dict(rt.outbox.dropped)
    return {
        "edge": {"id": cfg.edge.id, "name": cfg.edge.name, "version": __version__},
        "gateway": {
            "url": REDACTOR.text(redact_url(cfg.gateway.url)),
            "state": session.state,
            "since": rt.activity.gateway()["since"],
            "connects": session.connects,
            "failures": session.failures,
            "lastError": REDACTOR.text(session.last_error) if session.last_error else None,
        },
        "outbox": {
            "messages": rt.outbox.count,
            "bytes": rt.outbox.bytes,
            "dropped": dropped,
            "droppedTotal": sum(dropped.values()),
        },
        "inFlight": rt.engine.in_flight(),
        "devices": {
            "online": states.get("online", 0),
            "total": len(devices),
            "byState": dict(states),
        },
        "changes": rt.activity.recent(20),
        "allowCommands": cfg.console.allow_commands,
        "now": epoch_timestamp(time.time()),
    }


def device_row(
    dev: DeviceRuntime, telemetry: Telemetry | None, groups: bool = False
) -> dict[str, Any]:
    """One line of the devices table (times as epoch seconds: the browser formats them).

    Built for 500 devices a second: straight from the runtime's fields, no formatting;
    ``groups`` adds each poll group's figures (the device page).
    """
    states = telemetry.by_device.get(dev.id, ()) if telemetry is not None else ()
    cycle = None
    overruns = None
    last_sample = None
    for gs in states:
        if gs.last_duration is not None and (cycle is None or gs.last_duration > cycle):
            cycle = gs.last_duration
        overruns = (overruns or 0) + gs.skipped
        if gs.last_sample is not None and (last_sample is None or gs.last_sample > last_sample):
            last_sample = gs.last_sample
    row: dict[str, Any] = {
        "id": dev.id,
        "type": dev.config.type,
        "profile": dev.config.profile,
        "link": dev.link.name if dev.link is not None else None,
        "state": dev.state,
        "lastSeen": dev.last_seen,
        "lastError": dev.last_error,
        "counters": dev.counters.as_dict(),
        "cycleMs": None if cycle is None else round(cycle * 1e3, 1),
        "overruns": overruns,
        "lastSample": last_sample,
    }
    if groups:
        row["groups"] = [gs.status() for gs in states]
    return row


def device_rows(rt: RuntimeView) -> list[dict[str, Any]]:
    """Every device, broken ones first (then by id)."""
    rows = [device_row(d, rt.telemetry) for d in list(rt.devices.values())]
    rows.sort(key=lambda r: (STATE_ORDER.get(r["state"], 9), r["id"]))
    return rows


def live_points(
    dev: DeviceRuntime, telemetry: Telemetry | None, now: float | None = None
) -> list[dict[str, Any]]:
    """Each point of a device with its latest polled value, quality and sample age."""
    now = time.time() if now is None else now
    values: dict[str, Any] = {}
    times: dict[str, float] = {}
    quality: dict[str, str] = {}
    for gs in telemetry.by_device.get(dev.id, ()) if telemetry is not None else ():
        stale = dev.state != "online" or gs.failing
        reporter = gs.reporter
        for name, value in reporter.latest.items():
            values[name] = value
            quality[name] = "stale" if stale else "good"
            at = reporter.latest_times.get(name)
            if at is not None:
                times[name] = at
        for name in reporter.bad:
            quality[name] = "bad"
    out = []
    for name, point in dev.profile.points.items():
        at = times.get(name)
        out.append(
            {
                "name": name,
                "type": point.type,
                "unit": point.unit,
                "access": point.access,
                "min": point.min,
                "max": point.max,
                "description": point.description,
                "numeric": point.type in NUMERIC_TYPES,
                "value": _jsonable(values.get(name)),
                "quality": quality.get(name, "none"),
                "sampledAt": epoch_timestamp(at) if at is not None else None,
                "age": round(max(0.0, now - at), 1) if at is not None else None,
            }
        )
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def command_form(profile: ProfileConfig) -> dict[str, Any]:
    """The command tester's choices: profile commands with their params, readable and
    writable points with their ranges (the engine checks everything again)."""
    commands = []
    for name, cmd in sorted(profile.commands.items()):
        params = [
            {
                "name": pname,
                "type": p.type,
                "min": p.min,
                "max": p.max,
                "required": p.required,
                "default": p.default,
                "choices": p.choices,
                "description": p.description,
            }
            for pname, p in cmd.params.items()
        ]
        commands.append({"name": name, "description": cmd.description, "params": params})
    points = profile.points
    return {
        "commands": commands,
        "read": [n for n, p in points.items() if p.readable],
        "write": [
            {"name": n, "type": p.type, "min": p.min, "max": p.max, "unit": p.unit}
            for n, p in points.items()
            if p.writable
        ],
    }


def device_detail(
    rt: RuntimeView, dev_id: str, history: History, commands: CommandLog
) -> dict[str, Any] | None:
    """The device page: its row, points, history, recent commands (and the tester's form)."""
    dev = rt.devices.get(dev_id)
    if dev is None:
        return None
    out: dict[str, Any] = {
        "device": device_row(dev, rt.telemetry, groups=True),
        "points": live_points(dev, rt.telemetry),
        "history": history.series(dev_id),
        "historySize": history.size,
        "commands": commands.recent(dev_id),
        "allowCommands": rt.config.console.allow_commands,
        "now": epoch_timestamp(time.time()),
    }
    if rt.config.console.allow_commands:
        out["form"] = command_form(dev.profile)
    return out


def device_live(
    rt: RuntimeView, dev_id: str, history: History, after: float
) -> dict[str, Any] | None:
    """A live tick of the device page: row, points, and the samples newer than ``after``."""
    dev = rt.devices.get(dev_id)
    if dev is None:
        return None
    return {
        "device": device_row(dev, rt.telemetry, groups=True),
        "points": live_points(dev, rt.telemetry),
        "history": history.series(dev_id, after),
    }


def config_view(config: Config) -> dict[str, Any]:
    """The loaded configuration with every secret redacted (tokens, passwords in URLs)."""
    tree = config.model_dump(mode="json", exclude_none=True)
    gateway = tree.get("gateway")
    if isinstance(gateway, dict) and isinstance(gateway.get("url"), str):
        gateway["url"] = redact_url(gateway["url"])
    # the running log redactor's secrets, and this config's own (logging may not be set up)
    text = Redactor(config.secrets()).text(REDACTOR.text(json.dumps(tree, default=str)))
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def dumps(doc: Any) -> str:
    """Compact JSON for the browser (no NaN: JSON.parse refuses them)."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        return json.dumps(_clean(doc), separators=(",", ":"), allow_nan=False, default=str)


def _clean(doc: Any) -> Any:
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, Mapping):
        return {k: _clean(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_clean(v) for v in doc]
    return doc
