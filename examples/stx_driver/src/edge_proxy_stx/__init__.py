"""edge-proxy drivers for devices that speak the STX register protocol (TCP and serial)."""

from __future__ import annotations

from .driver import (
    StxDevice,
    StxLink,
    StxSerialDriver,
    StxSerialLink,
    StxTcpDriver,
    StxTcpLink,
    profile_problems,
)

__all__ = [
    "StxDevice",
    "StxLink",
    "StxSerialDriver",
    "StxSerialLink",
    "StxTcpDriver",
    "StxTcpLink",
    "profile_problems",
]
__version__ = "0.1.0"
