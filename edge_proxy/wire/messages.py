"""The Subway protocol as edge-proxy speaks it: parse Gateway frames, build edge frames.

Pure code: no asyncio and no sockets, so every rule of the wire contract is tested on values.
All knowledge of the wire format lives here; a change of the contract is a change of this file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from edge_proxy.errors import RequestError
from edge_proxy.wire import framing
from edge_proxy.wire.framing import clip as _clip
from edge_proxy.wire.framing import encode, is_terminal
from edge_proxy.wire.names import (
    CAPABILITIES,
    COMMAND_TYPES,
    DEVICE_STATES,
    HANDLED_TYPES,
    MAX_DEPTH,
    MAX_TEXT,
    MAX_TIMEOUT_MS,
    OPERATION_TYPES,
    PRIORITIES,
    SILENT_TYPES,
    TERMINAL_STATUSES,
    VERSION,
)

__all__ = [
    "CAPABILITIES",
    "COMMAND_TYPES",
    "DEVICE_STATES",
    "HANDLED_TYPES",
    "MAX_DEPTH",
    "MAX_TEXT",
    "MAX_TIMEOUT_MS",
    "OPERATION_TYPES",
    "PRIORITIES",
    "SILENT_TYPES",
    "TERMINAL_STATUSES",
    "VERSION",
    "CommandRequest",
    "Incoming",
    "MessageFactory",
    "encode",
    "epoch_timestamp",
    "is_terminal",
    "parse_command",
    "parse_frame",
    "utc_timestamp",
]

_REF_RE = re.compile(r'"requestRef"\s*:\s*"((?:[^"\\]|\\.){1,256})"')


_second: list[Any] = [-1, ""]  # the whole second last formatted, and its text


def epoch_timestamp(epoch: float) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` of wall-clock epoch seconds.

    The date and time of day are formatted once per second (every message carries one).
    """
    frac, whole_f = math.modf(epoch)  # the rounding datetime.fromtimestamp does
    whole, micros = int(whole_f), round(frac * 1_000_000)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    if whole != _second[0]:
        _second[0] = whole
        _second[1] = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(whole))
    return f"{_second[1]}{micros // 1000:03d}Z"


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``, e.g. ``2024-01-20T10:00:00.000Z``."""
    if now is None:
        return epoch_timestamp(time.time())
    now = now.astimezone(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _extract_ref(text: str) -> str | None:
    m = _REF_RE.search(text)
    if not m:
        return None
    try:
        ref = json.loads(f'"{m.group(1)}"')
    except ValueError:
        return None
    return ref if isinstance(ref, str) and ref else None


@dataclass(frozen=True)
class Incoming:
    """A Gateway frame that passed the envelope checks."""

    type: str
    body: dict[str, Any]
    request_ref: str | None


def parse_frame(data: str | bytes, max_size: int = 1024**2) -> Incoming:
    """Decode one frame and check its envelope; raise RequestError with a code otherwise."""
    if isinstance(data, bytes):
        if len(data) > max_size:
            ref = _extract_ref(data[:4096].decode("utf-8", "replace"))
            raise RequestError(
                "MALFORMED_MESSAGE",
                f"frame of {len(data)} bytes is too large",
                {"requestRef": ref} if ref else None,
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError("MALFORMED_MESSAGE", "frame is not UTF-8 text") from None
    else:
        text = data
        if len(text) > max_size:
            ref = _extract_ref(text[:4096])
            raise RequestError(
                "MALFORMED_MESSAGE",
                f"frame of {len(text)} characters is too large",
                {"requestRef": ref} if ref else None,
            )
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        ref = _extract_ref(text)
        raise RequestError(
            "MALFORMED_MESSAGE", "frame is not valid JSON", {"requestRef": ref} if ref else None
        ) from None
    if not isinstance(body, dict):
        raise RequestError("MALFORMED_MESSAGE", "frame is not a JSON object")
    raw_ref = body.get("requestRef")
    ref = raw_ref if isinstance(raw_ref, str) and raw_ref else None
    ref_details = {"requestRef": ref} if ref else None
    # nesting deeper than MAX_DEPTH needs that many brackets: most frames are cleared at once
    brackets = text.count("{") + text.count("[")
    if brackets > MAX_DEPTH - 2 and _too_deep(
        [body.get("callback"), body.get("command")], MAX_DEPTH
    ):
        # replies echo these (callback, parameters): they must stay encodable
        raise RequestError(
            "MALFORMED_MESSAGE", f"frame is nested more than {MAX_DEPTH} levels deep", ref_details
        )
    mtype = body.get("type")
    if not isinstance(mtype, str) or not mtype.strip():
        raise RequestError("MALFORMED_MESSAGE", "frame has no string field 'type'", ref_details)
    version = body.get("version", VERSION)
    if not isinstance(version, str) or version.split(".", 1)[0].strip() != VERSION.split(".", 1)[0]:
        raise RequestError(
            "UNSUPPORTED_VERSION",
            f"protocol version {version!r} is not supported (this edge speaks {VERSION})",
            ref_details,
        )
    canonical = mtype.strip().upper()
    if canonical not in HANDLED_TYPES:
        raise RequestError(
            "UNKNOWN_MESSAGE_TYPE", f"message type {mtype[:64]!r} is not known", ref_details
        )
    return Incoming(canonical, body, ref)


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True)
class CommandRequest:
    """A schema-checked ``COMMAND``; what it means for devices is the engine's business."""

    request_ref: str
    target_edge: str
    target_device: str | None
    command_type: str
    command_code: str | None
    operation_type: str | None
    device_type: str | None
    device_id: str | None
    parameters: dict[str, Any]
    priority: str
    timeout_ms: float | None
    callback: Any = None
    has_callback: bool = False
    raw_command: dict[str, Any] = field(default_factory=dict, repr=False)


def _invalid(msg: str, fieldname: str) -> RequestError:
    return RequestError("INVALID_COMMAND", msg, {"field": fieldname})


def _opt_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _invalid(f"{where}{key} must be a non-empty string", f"{where}{key}")
    return value


def parse_command(msg: Incoming) -> CommandRequest:
    """Check a COMMAND's schema; raise RequestError(INVALID_COMMAND) naming the field."""
    body = msg.body
    if msg.request_ref is None:
        raise _invalid("requestRef must be a non-empty string", "requestRef")
    target = body.get("targetClientId")
    if not isinstance(target, str) or not target:
        raise _invalid("targetClientId must be a string '<edgeId>:<deviceId>'", "targetClientId")
    edge, sep, device = target.partition(":")
    cmd = body.get("command")
    if not isinstance(cmd, dict):
        raise _invalid("command must be an object", "command")
    ctype = cmd.get("commandType", "SIMPLE")
    if not isinstance(ctype, str) or ctype.upper() not in COMMAND_TYPES:
        raise _invalid(
            f"commandType must be one of {', '.join(COMMAND_TYPES)}", "command.commandType"
        )
    op = cmd.get("operationType")
    if op is not None and (not isinstance(op, str) or op.lower() not in OPERATION_TYPES):
        raise _invalid(
            f"operationType must be one of {', '.join(OPERATION_TYPES)}", "command.operationType"
        )
    params = cmd.get("parameters", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _invalid("parameters must be an object", "command.parameters")
    priority = body.get("priority", "normal")
    if priority is None:
        priority = "normal"
    if not isinstance(priority, str) or priority.lower() not in PRIORITIES:
        raise _invalid(f"priority must be one of {', '.join(PRIORITIES)}", "priority")
    timeout = body.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_TIMEOUT_MS
    ):
        raise _invalid(f"timeout must be milliseconds in (0, {MAX_TIMEOUT_MS}]", "timeout")
    return CommandRequest(
        request_ref=msg.request_ref,
        target_edge=edge,
        target_device=device if sep and device else None,
        command_type=ctype.upper(),
        command_code=_opt_str(cmd, "commandCode", "command."),
        operation_type=op.lower() if isinstance(op, str) else None,
        device_type=_opt_str(cmd, "deviceType", "command."),
        device_id=_opt_str(cmd, "deviceId", "command."),
        parameters=params,
        priority=priority.lower(),
        timeout_ms=float(timeout) if timeout is not None else None,
        callback=body.get("callback"),
        has_callback="callback" in body,
        raw_command=cmd,
    )


class MessageFactory:
    """Builds every frame the edge sends, each with the full envelope."""

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        # messageId: a random per-process prefix and a counter, unique and cheap.
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def envelope(self, mtype: str, **fields: Any) -> dict[str, Any]:
        """A message of ``mtype`` with timestamp, version, clientId and messageId."""
        msg: dict[str, Any] = {"type": mtype, "clientId": self.client_id}
        msg.update(fields)
        msg["timestamp"] = utc_timestamp()
        msg["version"] = VERSION
        msg["messageId"] = self.message_id()
        return msg

    def message_id(self) -> str:
        """A new messageId, unique in this process and, by its random prefix, beyond."""
        return f"{self._prefix}-{next(self._counter)}"

    def register(
        self,
        name: str | None,
        version: str,
        devices: list[dict[str, Any]],
        token: str | None = None,
        *,
        max_frame: int | None = None,
    ) -> dict[str, Any]:
        """The REGISTER frame sent first on every connection (paged to fit ``max_frame``)."""
        info: dict[str, Any] = {
            "name": name or self.client_id,
            "version": version,
            "capabilities": list(CAPABILITIES),
            "devices": devices,
        }
        extra: dict[str, Any] = {"clientType": "EDGE", "clientInfo": info}
        if token:
            extra["auth"] = {"token": token}
        msg = self.envelope("REGISTER", **extra)
        if max_frame is not None and framing.size(msg) > max_frame:
            # as many devices as fit; the rest are read with QUERY devices in pages
            info["devicesTotal"] = len(devices)
            info["devicesTruncated"] = True
            msg, _ = framing.fit_list(msg, ("clientInfo", "devices"), max_frame)
        return msg

    def heartbeat(self, status: dict[str, Any]) -> dict[str, Any]:
        """A HEARTBEAT with the edge's status block."""
        return self.envelope("HEARTBEAT", status=status)

    def ack(self, request_ref: str, status: str, targets: list[str]) -> dict[str, Any]:
        """The ``ack`` of an accepted (or duplicate) COMMAND."""
        return self.envelope("ack", requestRef=request_ref, status=status, targets=targets)

    def progress(
        self,
        request_ref: str,
        progress: int,
        stage: str,
        completed: int,
        total: int,
        device_id: str | None = None,
    ) -> dict[str, Any]:
        """A ``progress_update``."""
        fields: dict[str, Any] = {
            "requestRef": request_ref,
            "progress": progress,
            "stage": stage,
            "completed": completed,
            "total": total,
        }
        if device_id is not None:
            fields["deviceId"] = device_id
        return self.envelope("progress_update", **fields)

    def response(
        self,
        request_ref: str,
        status: str,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        duration_ms: int | None = None,
        callback: Any = None,
        has_callback: bool = False,
    ) -> dict[str, Any]:
        """A terminal ``command_response``."""
        fields: dict[str, Any] = {"requestRef": request_ref, "status": status}
        if result is not None:
            fields["result"] = result
        if error is not None:
            fields["error"] = error
        if duration_ms is not None:
            fields["durationMs"] = duration_ms
        if has_callback:
            fields["callback"] = callback
        return self.envelope("command_response", **fields)

    def error(
        self,
        code: str,
        message: str,
        *,
        request_ref: str | None = None,
        details: dict[str, Any] | None = None,
        callback: Any = None,
        has_callback: bool = False,
    ) -> dict[str, Any]:
        """A terminal ``error``: the message was rejected and nothing ran."""
        fields: dict[str, Any] = {}
        if request_ref is not None:
            fields["requestRef"] = request_ref
        fields["code"] = code
        # messages and details quote Gateway input: keep a hostile frame from making a huge reply
        fields["message"] = _clip(message, 4 * MAX_TEXT)
        if details:
            fields["details"] = _clip(details, MAX_TEXT)
        if has_callback:
            fields["callback"] = callback
        return self.envelope("error", **fields)

    def device_status(
        self, device_id: str, device_type: str, status: str, previous: str | None, reason: str
    ) -> dict[str, Any]:
        """A ``device_status`` change notice."""
        return self.envelope(
            "device_status",
            deviceId=device_id,
            targetClientId=f"{self.client_id}:{device_id}",
            deviceType=device_type,
            status=status,
            previous=previous,
            reason=reason,
        )

    def telemetry(
        self,
        device_id: str,
        device_type: str,
        group: str,
        seq: int,
        sampled_at: float,
        values: dict[str, Any],
        *,
        snapshot: bool = False,
        quality: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """A ``telemetry`` message: one device's reported points of one poll cycle.

        ``sampled_at`` is wall-clock epoch seconds: when the device's reply arrived.
        """
        fields: dict[str, Any] = {
            "deviceId": device_id,
            "deviceType": device_type,
            "group": group,
            "seq": seq,
            "sampledAt": epoch_timestamp(sampled_at),
            "snapshot": snapshot,
            "values": values,
        }
        if quality:
            fields["quality"] = quality
        return self.envelope("telemetry", **fields)
