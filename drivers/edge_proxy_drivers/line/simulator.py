"""The line simulator: answers a profile's request commands, one text line each way.

A request is recognised by its command's ``request`` template (``"BRT {brightness:03d}"``
matches ``BRT 042``); the parameters it carries are remembered, and the reply is built from the
command's ``expect`` pattern with its named groups filled from what was remembered
(``STS (?P<door_state>\\d) (?P<brightness>\\d+)`` gives ``STS 0 42`` after that write). Devices
that share one link are asked in config order; the first whose profile recognises the request
answers. Served over TCP for ``line-tcp`` and on the device end of a serial line for
``line-serial``. A profile point with a ``simulate:`` rule gives the reply field of its name
(``door_state`` above) the rule's value at the time of the request, whatever was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import string
import time
from dataclasses import dataclass, field
from typing import Any

import serial_asyncio

from edge_proxy.config import CommandConfig, LineConfig, ProfileConfig
from edge_proxy.core import simulation_rules
from edge_proxy.drivers import DeviceSimulator

try:  # the regular-expression parser, to build replies that match ``expect``
    import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.10
    import sre_parse  # type: ignore[no-redef,unused-ignore]

log = logging.getLogger(__name__)

#: How long stop() waits for open conversations to end once their connections are closed.
_STOP_WAIT = 2.0
#: The reply to a request no device on the link recognises.
UNKNOWN_REPLY = "ERR unknown request"


# ---------------------------------------------------------------------------- replies


def _generate(parsed: Any, values: dict[str, Any], names: dict[int, str]) -> str:
    out = []
    for op, arg in parsed:
        opname = str(op)
        if opname == "LITERAL":
            out.append(chr(arg))
        elif opname == "SUBPATTERN":
            group, _, _, sub = arg
            name = names.get(group) if group is not None else None
            if name is not None and name in values:
                out.append(str(values[name]))
            else:
                out.append(_generate(sub, values, names))
        elif opname in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, sub = arg
            out.append(_generate(sub, values, names) * max(low, 1 if low == 0 else low))
        elif opname == "IN":
            out.append(_class_char(arg))
        elif opname == "BRANCH":
            out.append(_generate(arg[1][0], values, names))
        elif opname == "ANY":
            out.append("x")
        # AT (anchors) and other zero-width items produce nothing
    return "".join(out)


def _class_char(items: Any) -> str:
    for op, arg in items:
        opname = str(op)
        if opname == "CATEGORY":
            return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " "}.get(str(arg), "a")
        if opname == "LITERAL":
            return chr(arg)
        if opname == "RANGE":
            return chr(arg[0])
    return "0"


def build_reply(expect: str | None, values: dict[str, Any]) -> str:
    """A reply line matching ``expect``, with named groups taken from ``values`` where they fit."""
    if not expect:
        return "OK"
    parsed = sre_parse.parse(expect)
    names = {v: k for k, v in parsed.state.groupdict.items()}
    reply = _generate(parsed, values, names)
    if re.fullmatch(expect, reply) or re.match(expect, reply):
        return reply
    return _generate(parsed, {}, names)


def template_regex(template: str) -> re.Pattern[str]:
    """A pattern matching the lines a ``request`` template renders, one group per field."""
    parts = []
    for literal, fieldname, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if fieldname is not None:
            name = fieldname.split(".")[0].split("[")[0]
            parts.append(f"(?P<{name}>.+?)" if name.isidentifier() else "(?:.+?)")
    return re.compile("^" + "".join(parts) + "$")


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


@dataclass
class LineDeviceSim:
    """Answers one line device's profile commands, remembering the parameters it was sent."""

    profile: ProfileConfig
    state: dict[str, Any] = field(default_factory=dict)
    device_id: str = ""
    started: float = field(default_factory=time.monotonic)

    def answer(self, line: str) -> str | None:
        """The reply to one request line; None when no command of the profile sends it."""
        for cmd in self.profile.commands.values():
            if cmd.request is None:
                continue
            m = template_regex(cmd.request).match(line)
            if m is None:
                continue
            for key, raw in m.groupdict().items():
                self.state[key] = _number(raw)
            return build_reply(cmd.expect, self._values(cmd))
        return None

    def _values(self, cmd: CommandConfig) -> dict[str, Any]:
        values = dict(self.state)
        for name, spec in cmd.params.items():
            values.setdefault(name, spec.default if spec.default is not None else 0)
        t = time.monotonic() - self.started
        for name, point in self.profile.points.items():
            if point.simulate is not None:
                seed = simulation_rules.seed_of(self.device_id, name)
                value = simulation_rules.point_value(point, t, seed)
                values[name] = int(value) if isinstance(value, bool) else value
        return values


# ---------------------------------------------------------------------------- the server


class LineSimulator(DeviceSimulator):
    """A line server for the devices of one line link, over TCP or a serial line."""

    def setup(self) -> None:
        """The simulator's own state."""
        self.sims = [LineDeviceSim(profile, device_id=dev.id) for dev, profile in self.devices]
        # One wire, one line format: the first device's.
        line = next((p.line for _, p in self.devices if p.line is not None), LineConfig())
        self.encoding = line.encoding
        self.terminator = line.terminator.encode(line.encoding)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def answer(self, request: str) -> str:
        """The reply of the first device that recognises the request."""
        for sim in self.sims:
            reply = sim.answer(request)
            if reply is not None:
                return reply
        return UNKNOWN_REPLY

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        term = self.terminator
        try:
            while True:
                raw = await reader.readuntil(term)
                request = raw[: -len(term)].decode(self.encoding, "replace")
                reply = self.answer(request)
                writer.write(reply.encode(self.encoding, "replace") + term)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away, or sent a line too long to be a request
        except OSError as exc:  # a serial port that went away
            log.info("line simulator of link %s: %s", self.link_name, exc)
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def serve_tcp(self, host: str, port: int) -> int:
        """Listen on host:port; returns the port."""
        self._server = await asyncio.start_server(self._converse, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def serve_serial(self, path: str) -> None:
        """Open the serial port ``path`` and answer on it."""
        cfg = self.link
        stopbits: float = int(cfg.stopbits) if float(cfg.stopbits).is_integer() else cfg.stopbits
        reader, writer = await serial_asyncio.open_serial_connection(
            url=path,
            baudrate=cfg.baudrate,
            bytesize=cfg.bytesize,
            parity=cfg.parity,
            stopbits=stopbits,
        )
        task = asyncio.create_task(self._converse(reader, writer), name=f"line-sim-{path}")
        self._tasks.add(task)

    async def stop_serving(self) -> None:
        """Close the listener, every connection and the serial port."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        # Closing a connection ends its conversation (the reader sees EOF); a cancelled
        # start_server handler would be reported by asyncio as an error instead.
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_STOP_WAIT)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        if server is not None:
            with contextlib.suppress(OSError):
                await server.wait_closed()
