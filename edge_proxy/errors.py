"""The one exception tree of edge-proxy, and its single mapping to protocol error codes.

Drivers raise these; the engine turns them into ``command_response`` failures with
:func:`error_code` and nothing else decides a code.
"""

from __future__ import annotations

from typing import Any


class EdgeProxyError(Exception):
    """Root of every error edge-proxy raises on purpose."""

    code = "INTERNAL_ERROR"

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message or self.__class__.__name__
        self.details = details or {}


class DeviceError(EdgeProxyError):
    """A device operation failed while running."""

    code = "IO_ERROR"


class DeviceOffline(DeviceError):
    """The device (or its link) is known to be unreachable; the command was not sent."""

    code = "DEVICE_OFFLINE"


class DeviceTimeout(DeviceError, TimeoutError):
    """The device did not answer one transaction within the link timeout."""

    code = "DEVICE_TIMEOUT"


class DeviceException(DeviceError):
    """The device answered with an error (a Modbus exception, a reply that did not match)."""

    code = "DEVICE_EXCEPTION"


class LinkIOError(DeviceError, OSError):
    """The connection failed: refused, closed, broken frame."""

    code = "IO_ERROR"


class OperationAborted(EdgeProxyError):
    """The command was cancelled or expired between two transactions."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestError(EdgeProxyError):
    """A Gateway message that is rejected before anything runs (an ``error`` frame)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details)
        self.code = code


class DriverError(EdgeProxyError):
    """A driver plugin that is missing, broken or misconfigured."""


def error_code(exc: BaseException) -> str:
    """The protocol error code for an exception raised while running a command."""
    if isinstance(exc, EdgeProxyError):
        return exc.code
    if isinstance(exc, TimeoutError):
        return "DEVICE_TIMEOUT"
    if isinstance(exc, (OSError, ConnectionError, EOFError)):
        return "IO_ERROR"
    return "INTERNAL_ERROR"


def error_body(exc: BaseException) -> dict[str, Any]:
    """The ``error`` object of a failed ``command_response``."""
    if isinstance(exc, EdgeProxyError):
        body: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return body
    return {"code": error_code(exc), "message": str(exc) or type(exc).__name__}
