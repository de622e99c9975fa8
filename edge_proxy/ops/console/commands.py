"""Recent commands per device, with their ack, progress and terminal messages.

Every command message the daemon emits passes :meth:`CommandLog.observe` (Gateway, control
socket and console commands alike; Gateway ones are known from their ``accepted`` ack, console
ones from :meth:`CommandLog.begin`, before the engine sees them). Everything is bounded: the
commands remembered, the devices one command is filed under, the messages kept per command
and the size of a kept message (a large terminal keeps its status and error, not its result).
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge_proxy.wire.messages import epoch_timestamp
from edge_proxy.wire.names import ACK, CONSOLE_PREFIX, ERROR, LOCAL_PREFIX, PROGRESS, RESPONSE

COMMAND_MESSAGES = frozenset({ACK, PROGRESS, RESPONSE, ERROR})
MAX_KEPT_TEXT = 8 * 1024  # a message larger than this is kept without its result
MAX_MESSAGES = 24  # per command: the first ones and the terminal
MAX_DEVICES = 50  # devices a BATCH is filed under


class RequestLike(Protocol):
    """What is read of a running command's request (``CommandRequest``)."""

    command_type: str
    command_code: str | None
    operation_type: str | None
    parameters: dict[str, Any]


def source_of(ref: str) -> str:
    """Where a command came from, by its requestRef: console, local (control socket), gateway."""
    if ref.startswith(CONSOLE_PREFIX):
        return "console"
    if ref.startswith(LOCAL_PREFIX):
        return "local"
    return "gateway"


def describe_parts(command_type: str, code: str | None, operation: str | None) -> str:
    """``SIMPLE write`` / ``SIMPLE SET_BRIGHTNESS`` / ``BATCH read``: one line for a command."""
    return f"{command_type} {code or operation or ''}".strip()


def describe(request: RequestLike) -> str:
    """A running command's request in one line (see :func:`describe_parts`)."""
    return describe_parts(request.command_type, request.command_code, request.operation_type)


def _kept(msg: Mapping[str, Any]) -> dict[str, Any]:
    """The message as the console keeps it: no private keys, no huge result."""
    out = {k: v for k, v in msg.items() if not k.startswith("_")}
    text = msg.get("_text")
    size = len(text) if isinstance(text, str) else len(json.dumps(out, default=str))
    if size > MAX_KEPT_TEXT and "result" in out:
        out["result"] = f"({size} bytes: too large to keep here; QUERY result has it)"
    return out


@dataclass
class Entry:
    """One command as the console shows it."""

    ref: str
    source: str
    command: str
    devices: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: epoch_timestamp(time.time()))
    status: str = "sent"
    messages: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    def add(self, msg: Mapping[str, Any]) -> None:
        """File one message (the terminal always; progress beyond the bound is counted)."""
        mtype = msg.get("type")
        terminal = mtype in (RESPONSE, ERROR)
        if terminal:
            self.status = str(msg.get("status") or msg.get("code") or mtype)
        elif mtype == ACK:
            self.status = str(msg.get("status", "accepted"))
        elif mtype == PROGRESS:
            self.status = f"{msg.get('progress')}%"
        if len(self.messages) >= MAX_MESSAGES - 1 and not terminal:
            self.dropped += 1
            return
        self.messages.append(_kept(msg))

    def view(self) -> dict[str, Any]:
        """The entry as JSON."""
        return {
            "ref": self.ref,
            "source": self.source,
            "command": self.command,
            "devices": self.devices,
            "parameters": self.parameters,
            "at": self.at,
            "status": self.status,
            "messages": self.messages,
            "droppedMessages": self.dropped,
        }


class CommandLog:
    """The last commands of every device (``per_device`` each; ``max_refs`` in all)."""

    def __init__(self, per_device: int = 20, max_refs: int = 2000) -> None:
        self.per_device = per_device
        self.max_refs = max_refs
        self.entries: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self.by_device: dict[str, collections.deque[Entry]] = {}

    def begin(
        self, ref: str, devices: list[str], command: str, parameters: dict[str, Any]
    ) -> Entry:
        """File a command before the engine sees it (the console's own)."""
        entry = Entry(ref, source_of(ref), command, devices[:MAX_DEVICES], dict(parameters))
        self._file(entry)
        return entry

    def _file(self, entry: Entry) -> None:
        self.entries[entry.ref] = entry
        while len(self.entries) > self.max_refs:
            self.entries.popitem(last=False)
        for dev_id in entry.devices:
            ring = self.by_device.get(dev_id)
            if ring is None:
                ring = self.by_device[dev_id] = collections.deque(maxlen=self.per_device)
            ring.append(entry)

    def observe(
        self, msg: Mapping[str, Any], running: Mapping[str, Any] | None = None
    ) -> Entry | None:
        """File a command message; the entry it belongs to, or None (not a command's).

        ``running`` is the engine's map of running commands (requestRef -> CommandState), read
        to describe a Gateway command when its ack comes.
        """
        if msg.get("type") not in COMMAND_MESSAGES:
            return None
        ref = msg.get("requestRef")
        if not isinstance(ref, str):
            return None
        entry = self.entries.get(ref)
        if entry is None:
            if msg.get("type") != ACK or msg.get("status") != "accepted":
                return None
            targets = msg.get("targets")
            devices = (
                [t for t in targets if isinstance(t, str)] if isinstance(targets, list) else []
            )
            cs = running.get(ref) if running is not None else None
            request = getattr(cs, "request", None)
            command = describe(request) if request is not None else "command"
            params = getattr(request, "parameters", None) or {}
            entry = Entry(ref, source_of(ref), command, devices[:MAX_DEVICES], dict(params))
            self._file(entry)
        entry.add(msg)
        return entry

    def recent(self, dev_id: str) -> list[dict[str, Any]]:
        """A device's recent commands, newest first."""
        return [e.view() for e in reversed(self.by_device.get(dev_id, ()))]

    def keep_only(self, dev_ids: set[str]) -> None:
        """Forget the devices a reload removed."""
        for dev_id in [d for d in self.by_device if d not in dev_ids]:
            del self.by_device[dev_id]
