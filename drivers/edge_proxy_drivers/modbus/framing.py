"""How each Modbus driver frames its requests: one table, read by the links and the simulator.

``modbus-tcp`` uses the MBAP header (with transaction ids); ``modbus-rtu-over-tcp`` sends RTU
frames (unit, PDU, CRC) through a TCP connection, as serial-to-Ethernet converters do;
``modbus-rtu`` and ``modbus-ascii`` are the two framings of a serial line.
"""

from __future__ import annotations

from pymodbus.framer import FramerType

#: The framing of each Modbus driver, by driver name.
FRAMERS: dict[str, FramerType] = {
    "modbus-tcp": FramerType.SOCKET,
    "modbus-rtu-over-tcp": FramerType.RTU,
    "modbus-rtu": FramerType.RTU,
    "modbus-ascii": FramerType.ASCII,
}


def framer_for(driver: str) -> FramerType:
    """The framing a Modbus driver puts on the wire; KeyError for a driver that is not Modbus."""
    return FRAMERS[driver]
