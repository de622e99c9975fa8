"""The Modbus device adapter: one unit on a link, typed point reads and writes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from pymodbus.client import ModbusBaseClient
from pymodbus.pdu import ModbusPDU

from edge_proxy.config import DeviceConfig, PointConfig, ProfileConfig
from edge_proxy.core import points as codec
from edge_proxy.drivers import Device, Link, current_operation
from edge_proxy.errors import DeviceException, DeviceTimeout
from edge_proxy_drivers.modbus.client import ModbusLink

log = logging.getLogger(__name__)

PLAN_CACHE = 256  # point lists whose read plan a device keeps

#: Function codes by table, for reads.
READ_FUNCTIONS: dict[str, int] = {"coil": 1, "discrete_input": 2, "holding": 3, "input": 4}

#: The pymodbus client method of each read function code.
READ_METHODS: dict[int, str] = {
    1: "read_coils",
    2: "read_discrete_inputs",
    3: "read_holding_registers",
    4: "read_input_registers",
}

#: The standard names of Modbus exception codes.
EXCEPTION_NAMES: dict[int, str] = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}

#: Exceptions a gateway sends for the device behind it that did not answer: these are timeouts
#: (``DEVICE_TIMEOUT``, counted toward ``offline_after``), not answers of the device.
GATEWAY_NO_ANSWER = frozenset({10, 11})

#: A write request given the client, the unit and whether it is a broadcast (no reply).
WriteCall = Callable[[ModbusBaseClient, int, bool], Awaitable[ModbusPDU]]


def exception_name(code: int) -> str:
    """The standard name of a Modbus exception code."""
    return EXCEPTION_NAMES.get(code, f"exception {code}")


class ModbusDevice(Device):
    """One Modbus unit on a link: typed point reads and writes."""

    link: ModbusLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        self._plans: dict[tuple[str, ...], list[codec.BlockDecoder]] = {}

    @property
    def health_asks_device(self) -> bool:
        """Whether health() asks the unit something: a readable point, and not broadcast unit 0."""
        return not self._broadcast() and any(p.readable for p in self.profile.points.values())

    def _what(self, fc: int, table: str, address: int, count: int) -> str:
        return f"unit {self.unit} FC{fc} {table} {address}+{count}"

    def _log_extra(self) -> dict[str, Any]:
        op = current_operation()
        extra: dict[str, Any] = {"device_id": self.config.id}
        if op is not None and op.request_ref is not None:
            extra["request_ref"] = op.request_ref
        return extra

    def _check_error(self, response: ModbusPDU, fc: int, what: str) -> None:
        if response.function_code & 0x7F != fc:
            raise self.link.reply_mismatch(
                self.unit, what, f"function code {response.function_code}"
            )
        if response.isError():
            code = int(response.exception_code)
            message = f"{what}: Modbus exception {code} ({exception_name(code)})"
            details = {"exceptionCode": code, "function": fc}
            if code in GATEWAY_NO_ANSWER:
                raise DeviceTimeout(message, details=details)
            raise DeviceException(message, details=details)

    def _broadcast(self) -> bool:
        return self.unit == 0 and self.link.broadcast_unit_zero

    async def read_table(self, table: str, address: int, count: int) -> list[int]:
        """Read count registers (as ints) or bits (as 0/1) of a table in one request."""
        fc = READ_FUNCTIONS[table]
        what = self._what(fc, table, address, count)
        if self._broadcast():
            raise DeviceException(f"{what}: unit 0 is the broadcast address and cannot be read")
        unit = self.unit
        method = READ_METHODS[fc]
        response = await self.link.transaction(
            unit, lambda c: getattr(c, method)(address, count=count, device_id=unit), what
        )
        assert response is not None
        self._check_error(response, fc, what)
        data = [int(b) for b in response.bits] if fc <= 2 else list(response.registers)
        if len(data) < count:
            raise self.link.reply_mismatch(self.unit, what, f"{len(data)} values for {count}")
        return data[:count]

    def read_plan(self, points: Sequence[str], *, contiguous: bool = False) -> list[list[str]]:
        """The reads ``read(points)`` makes: per table, up to the Modbus limits and max_gap."""
        specs = {name: self.profile.points[name] for name in points}
        blocks = codec.plan_reads(
            specs,
            max_gap=0 if contiguous else self.link.max_gap,
            max_registers=self.link.max_registers,
            max_bits=self.link.max_bits,
        )
        return [list(block.names) for block in blocks]

    def _planned(self, points: Sequence[str]) -> list[codec.BlockDecoder]:
        """The read blocks of a point list with their decoders, planned once and then reused."""
        key = tuple(points)
        plan = self._plans.get(key)
        if plan is None:
            specs: dict[str, PointConfig] = {name: self.profile.points[name] for name in points}
            blocks = codec.plan_reads(
                specs,
                max_gap=self.link.max_gap,
                max_registers=self.link.max_registers,
                max_bits=self.link.max_bits,
            )
            plan = [codec.BlockDecoder(block, specs) for block in blocks]
            if len(self._plans) < PLAN_CACHE:  # the same few point lists come back all day
                self._plans[key] = plan
        return plan

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Read the points with as few requests as the Modbus limits allow."""
        values: dict[str, Any] = {}
        for decoder in self._planned(points):
            block = decoder.block
            data = await self.read_table(block.table, block.address, block.count)
            values.update(decoder.decode(data))
        return {name: values[name] for name in points}

    async def _send_write(self, fc: int, what: str, call: WriteCall) -> ModbusPDU | None:
        """Send one write; return its checked reply, or None for a broadcast (no reply)."""
        if self._broadcast():
            await self.link.transaction(0, lambda c: call(c, 0, True), what, reply=False)
            return None
        unit = self.unit
        response = await self.link.transaction(unit, lambda c: call(c, unit, False), what)
        assert response is not None
        self._check_error(response, fc, what)
        return response

    async def _write_coil(self, address: int, value: bool) -> None:
        await self._write_single(5, "coil", "write_coil", "bits", address, value)

    async def _write_register(self, address: int, word: int) -> None:
        await self._write_single(6, "holding", "write_register", "registers", address, word)

    async def _write_single(
        self, fc: int, table: str, method: str, echoed: str, address: int, value: bool | int
    ) -> None:
        """FC5/FC6: write one coil or register with ``client.<method>`` and check the echo
        (``response.<echoed>``) of a reply."""
        what = self._what(fc, table, address, 1)
        response = await self._send_write(
            fc,
            what,
            lambda c, unit, bcast: getattr(c, method)(
                address, value, device_id=unit, no_response_expected=bcast
            ),
        )
        if response is not None and (
            response.address != address or list(getattr(response, echoed)[:1]) != [value]
        ):
            echo = f"{response.address}={list(getattr(response, echoed)[:1])}"
            raise self.link.reply_mismatch(self.unit, what, f"echo {echo}")

    async def _write_registers(self, address: int, words: list[int]) -> None:
        what = self._what(16, "holding", address, len(words))
        response = await self._send_write(
            16,
            what,
            lambda c, unit, bcast: c.write_registers(
                address, words, device_id=unit, no_response_expected=bcast
            ),
        )
        if response is not None and (response.address != address or response.count != len(words)):
            echo = f"{response.address}+{response.count}"
            raise self.link.reply_mismatch(self.unit, what, f"echo {echo}")

    async def write(self, values: Mapping[str, Any]) -> None:
        """Write each point: FC5 coil, FC6 one register, FC16 several, FC3+FC6 for a bit."""
        for name, value in values.items():
            point = self.profile.points[name]
            if point.table == "coil":
                await self._write_coil(point.address, codec.encode_bit(point, value))
            elif point.table != "holding":
                raise DeviceException(f"{name}: a {point.table} point cannot be written")
            elif point.bit is not None:
                bit = codec.encode_bit(point, value)
                if self._broadcast():
                    raise DeviceException(
                        f"{name}: a bit cannot be read-modify-written on broadcast unit 0"
                    )
                # The core holds the link for the whole operation, so no other command can
                # slip a write in between the read and the write-back.
                (word,) = await self.read_table("holding", point.address, 1)
                await self._write_register(point.address, codec.apply_bit(word, point.bit, bit))
            else:
                words = codec.encode_registers(point, value)
                if len(words) == 1:
                    await self._write_register(point.address, words[0])
                else:
                    await self._write_registers(point.address, words)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "device %s: wrote %s = %r", self.config.id, name, value, extra=self._log_extra()
                )
