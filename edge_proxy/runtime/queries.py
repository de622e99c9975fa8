"""QUERY answers: read from memory, never touching a bus, and never larger than ``max_frame``.

``devices`` and ``result`` are paged (``offset``, ``limit``; ``total`` and ``next`` in the
answer): without a ``limit``, a page holds as many items as fit in one frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from edge_proxy.errors import RequestError
from edge_proxy.runtime.dedup import DedupStore
from edge_proxy.runtime.devices import DeviceRuntime
from edge_proxy.wire import framing
from edge_proxy.wire.names import QUERY_KINDS


class TelemetryView(Protocol):
    """What queries read of the telemetry collector."""

    def values(self, dev_id: str) -> dict[str, Any]:
        """The cache of a device's polled points (QUERY values)."""
        ...

    def status(self, dev_id: str) -> list[dict[str, Any]] | None:
        """Per-group cycle figures of a device."""
        ...


# room kept for the response envelope around a page (type, ids, timestamp, status, ...)
ENVELOPE = 512


def _int_field(body: Mapping[str, Any], name: str, default: int | None, low: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError(
            "INVALID_COMMAND", f"{name} must be a whole number >= {low}", {"field": name}
        )
    return value


def _page(body: Mapping[str, Any], items: list[Any], key: str, max_frame: int) -> dict[str, Any]:
    offset = _int_field(body, "offset", 0, 0) or 0
    limit = _int_field(body, "limit", None, 1)
    window = items[offset:] if limit is None else items[offset : offset + limit]
    # the page's frame: the envelope, the other fields, then as many items as fit
    base = ENVELOPE + framing.size({key: [], "total": len(items), "next": len(items)})
    keep = framing.how_many_fit(base, window, max_frame)
    page = window[:keep]
    result = {key: page, "total": len(items)}
    if offset + keep < len(items):
        result["next"] = offset + keep
    return result


def _device(devices: Mapping[str, DeviceRuntime], body: Mapping[str, Any]) -> DeviceRuntime:
    dev_id = body.get("deviceId")
    if not isinstance(dev_id, str):
        raise RequestError("INVALID_COMMAND", "this query needs deviceId", {"field": "deviceId"})
    dev = devices.get(dev_id)
    if dev is None:
        raise RequestError(
            "UNKNOWN_DEVICE", f"no device {dev_id!r} on this edge", {"field": "deviceId"}
        )
    return dev


def device_status(dev: DeviceRuntime, telemetry: TelemetryView | None) -> dict[str, Any]:
    """A device's entry in QUERY devices: its status, and its poll groups' figures."""
    info = dev.status()
    groups = telemetry.status(dev.id) if telemetry is not None else None
    if groups:
        info["telemetry"] = groups
    return info


def device_info(dev: DeviceRuntime, telemetry: TelemetryView | None = None) -> dict[str, Any]:
    """One device's QUERY ``device`` entry: its status, points and commands."""
    info = device_status(dev, telemetry)
    info["points"] = {
        name: {k: v for k, v in p.model_dump().items() if v is not None}
        for name, p in dev.profile.points.items()
    }
    info["commands"] = sorted(dev.profile.commands)
    return info


def answer_query(
    body: Mapping[str, Any],
    devices: Mapping[str, DeviceRuntime],
    finished: DedupStore,
    max_frame: int,
    telemetry: TelemetryView | None = None,
) -> dict[str, Any]:
    """The ``result`` of a QUERY (raises RequestError for a bad one)."""
    what = body.get("query")
    if isinstance(what, str):
        what = what.lower()
    if what == "devices":
        entries = [device_status(d, telemetry) for d in devices.values()]
        return _page(body, entries, "devices", max_frame)
    if what == "device":
        return {"device": device_info(_device(devices, body), telemetry)}
    if what == "values":
        dev = _device(devices, body)
        return telemetry.values(dev.id) if telemetry is not None else {}
    if what == "result":
        ref = body.get("ref")
        if not isinstance(ref, str) or not ref:
            raise RequestError("INVALID_COMMAND", "query 'result' needs ref", {"field": "ref"})
        done = finished.get(ref)
        if done is None:
            raise RequestError(
                "INVALID_COMMAND",
                f"no finished command {ref!r} is remembered (kept for commands.dedup_window)",
                {"field": "ref"},
            )
        results = done.results
        if results is None:
            stored = done.message.get("result")
            results = stored.get("results") if isinstance(stored, dict) else None
        items = [{k: v} for k, v in (results or {}).items()]
        page = _page(body, items, "results", max_frame)
        merged: dict[str, Any] = {}
        for item in page["results"]:
            merged.update(item)
        return {"ref": ref, **page, "results": merged}
    kinds = ", ".join(f"'{k}'" for k in QUERY_KINDS)
    raise RequestError("INVALID_COMMAND", f"query must be one of {kinds}", {"field": "query"})
