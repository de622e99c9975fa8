"""``edge-proxy simulate``: serve a config's devices as real servers on this machine.

Every enabled Modbus device becomes a unit of a real pymodbus server whose register map follows
its profile (devices that share a link share one server, one unit each). Serial Modbus devices
are served over TCP with RTU framing (``modbus-rtu-over-tcp``), since a TCP port is something a
laptop always has. Every ``line-*`` device becomes a TCP line server that answers its profile's
commands: it recognises a request by its template, remembers the parameters it was given, and
answers with a reply built from the command's ``expect`` pattern.

:meth:`Simulator.rewrite` returns the config with each simulated device's link pointed at its
server, so the same device map runs against the simulators unchanged otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import string
from dataclasses import dataclass, field
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_proxy.config import CommandConfig, Config, DeviceConfig, LinkConfig, ProfileConfig
from edge_proxy.core import points as pointcodec

try:  # the regular-expression parser, to build replies that match ``expect``
    import re._parser as sre_parse  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # Python 3.10
    import sre_parse  # type: ignore[no-redef,unused-ignore]

log = logging.getLogger(__name__)

MODBUS_DRIVERS = {"modbus-tcp", "modbus-rtu", "modbus-ascii", "modbus-rtu-over-tcp"}
LINE_DRIVERS = {"line-tcp", "line-serial"}


def _block_sizes(profile: ProfileConfig) -> dict[str, int]:
    sizes = {"coil": 1, "discrete_input": 1, "holding": 1, "input": 1}
    for point in profile.points.values():
        end = point.address + pointcodec.register_count(point)
        sizes[point.table] = max(sizes[point.table], end)
    return sizes


def modbus_device(unit: int, profile: ProfileConfig) -> SimDevice:
    """A pymodbus SimDevice whose four tables cover every point of the profile."""
    sizes = _block_sizes(profile)
    return SimDevice(
        id=unit,
        simdata=(
            [SimData(address=0, values=[False] * sizes["coil"], datatype=DataType.BITS)],
            [SimData(address=0, values=[False] * sizes["discrete_input"], datatype=DataType.BITS)],
            [SimData(address=0, count=sizes["holding"], values=0, datatype=DataType.REGISTERS)],
            [SimData(address=0, count=sizes["input"], values=0, datatype=DataType.REGISTERS)],
        ),
    )


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


def _template_regex(template: str) -> re.Pattern[str]:
    parts = []
    for literal, fieldname, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if fieldname is not None:
            name = fieldname.split(".")[0].split("[")[0]
            parts.append(f"(?P<{name}>.+?)" if name.isidentifier() else "(?:.+?)")
    return re.compile("^" + "".join(parts) + "$")


@dataclass
class LineDeviceSim:
    """Answers one line device's profile commands, remembering the parameters it was sent."""

    profile: ProfileConfig
    state: dict[str, Any] = field(default_factory=dict)

    def answer(self, line: str) -> str:
        """The reply to one request line."""
        for _name, cmd in self.profile.commands.items():
            if cmd.request is None:
                continue
            m = _template_regex(cmd.request).match(line)
            if m is None:
                continue
            for key, raw in m.groupdict().items():
                self.state[key] = _number(raw)
            return build_reply(cmd.expect, self._values(cmd))
        return "ERR unknown request"

    def _values(self, cmd: CommandConfig) -> dict[str, Any]:
        values = dict(self.state)
        for name, spec in cmd.params.items():
            values.setdefault(name, spec.default if spec.default is not None else 0)
        return values


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# ---------------------------------------------------------------------------- the simulator


@dataclass
class Served:
    """One simulated device and where it is served."""

    device: DeviceConfig
    host: str
    port: int
    driver: str  # the driver a client uses to reach it


class Simulator:
    """Runs servers for every enabled Modbus and line device of a config."""

    def __init__(self, config: Config, host: str = "127.0.0.1", base_port: int = 0) -> None:
        self.config = config
        self.host = host
        self.base_port = base_port
        self.served: dict[str, Served] = {}
        self._modbus: list[ModbusTcpServer] = []
        self._line: list[asyncio.Server] = []
        self._next_port = base_port

    def _port(self) -> int:
        if self.base_port == 0:
            return 0
        port = self._next_port
        self._next_port += 1
        return port

    async def start(self) -> dict[str, Served]:
        """Start every server; returns where each device is served."""
        groups: dict[str, list[DeviceConfig]] = {}
        for dev in self.config.devices:
            if not dev.enabled:
                continue
            link = self.config.link_of(dev)
            if link.driver in MODBUS_DRIVERS or link.driver in LINE_DRIVERS:
                groups.setdefault(self.config.link_name_of(dev), []).append(dev)
        for devices in groups.values():
            link = self.config.link_of(devices[0])
            if link.driver in MODBUS_DRIVERS:
                await self._start_modbus(link, devices)
            else:
                for dev in devices:
                    await self._start_line(dev)
        return self.served

    async def _start_modbus(self, link: LinkConfig, devices: list[DeviceConfig]) -> None:
        tcp = link.driver == "modbus-tcp"
        sims = [
            modbus_device(1 if d.unit is None else d.unit, self.config.profiles[d.profile])
            for d in devices
        ]
        server = ModbusTcpServer(
            sims,
            framer=FramerType.SOCKET if tcp else FramerType.RTU,
            address=(self.host, self._port()),
        )
        await server.serve_forever(background=True)
        self._modbus.append(server)
        listener = server.transport
        assert isinstance(listener, asyncio.Server)
        port = int(listener.sockets[0].getsockname()[1])
        for dev in devices:
            driver = "modbus-tcp" if tcp else "modbus-rtu-over-tcp"
            self.served[dev.id] = Served(dev, self.host, port, driver)

    async def _start_line(self, dev: DeviceConfig) -> None:
        profile = self.config.profiles[dev.profile]
        line = profile.line
        terminator = (line.terminator if line else "\r\n").encode()
        encoding = line.encoding if line else "ascii"
        sim = LineDeviceSim(profile)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    raw = await reader.readuntil(terminator)
                    request = raw[: -len(terminator)].decode(encoding, "replace")
                    reply = sim.answer(request)
                    writer.write(reply.encode(encoding, "replace") + terminator)
                    await writer.drain()
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, self.host, self._port())
        self._line.append(server)
        port = int(server.sockets[0].getsockname()[1])
        self.served[dev.id] = Served(dev, self.host, port, "line-tcp")

    def rewrite(self) -> Config:
        """The config with every simulated device's link pointed at its server."""
        links = dict(self.config.links)
        devices = []
        for dev in self.config.devices:
            served = self.served.get(dev.id)
            if served is None:
                devices.append(dev)
                continue
            link = self._pointed(self.config.link_of(dev), served)
            if isinstance(dev.link, str):  # a named link keeps its name
                links[dev.link] = link
                devices.append(dev)
            else:
                devices.append(dev.model_copy(update={"link": link}))
        return self.config.model_copy(update={"links": links, "devices": devices})

    @staticmethod
    def _pointed(old: LinkConfig, served: Served) -> LinkConfig:
        fields = old.model_dump(exclude={"driver", "host", "port"})
        fields.update(old.extra_keys)
        return LinkConfig.model_validate(
            {**fields, "driver": served.driver, "host": served.host, "port": served.port}
        )

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows of device, configured driver, served as, address."""
        rows = []
        for dev_id, served in self.served.items():
            configured = self.config.link_of(served.device).driver
            rows.append((dev_id, configured, served.driver, f"{served.host}:{served.port}"))
        return rows

    async def stop(self) -> None:
        """Stop every server."""
        for server in self._modbus:
            with contextlib.suppress(Exception):
                await server.shutdown()  # type: ignore[no-untyped-call]
            # pymodbus may have scheduled a relisten that shutdown() leaves running
            if server.reconnect_task is not None:
                server.reconnect_task.cancel()
                server.reconnect_task = None
        for line_server in self._line:
            line_server.close()
            with contextlib.suppress(Exception):
                await line_server.wait_closed()
        self._modbus.clear()
        self._line.clear()
