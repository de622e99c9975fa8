"""The line device adapter: a profile's request commands, one text line each way."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from edge_proxy.config import CommandConfig, DeviceConfig, LineConfig, ProfileConfig
from edge_proxy.drivers import Device, Link, checkpoint
from edge_proxy.errors import DeviceException, RequestError
from edge_proxy_drivers.line.client import LineLink

_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")
_DEFAULT_LINE = LineConfig()


def _number(text: str | None) -> Any:
    if text is None:
        return None
    stripped = text.strip()
    if _INT_RE.fullmatch(stripped):
        return int(stripped)
    if _FLOAT_RE.fullmatch(stripped):
        return float(stripped)
    return text


class LineDevice(Device):
    """A device that talks one text line per request and per reply."""

    link: LineLink

    def __init__(self, link: Link, config: DeviceConfig, profile: ProfileConfig) -> None:
        super().__init__(link, config, profile)
        self.line = profile.line or _DEFAULT_LINE
        self._terminator = self.line.terminator.encode(self.line.encoding)
        self._patterns: dict[str, re.Pattern[str]] = {
            name: re.compile(cmd.expect)
            for name, cmd in profile.commands.items()
            if cmd.expect is not None
        }

    def _render(self, name: str, cmd: CommandConfig, params: Mapping[str, Any]) -> bytes:
        assert cmd.request is not None
        try:
            text = cmd.request.format(**params)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise RequestError(
                "INVALID_PARAMETERS", f"{name}: cannot fill request {cmd.request!r}: {exc}"
            ) from None
        if self.line.terminator in text:
            # A parameter carrying the terminator would send a second, unchecked request.
            raise RequestError(
                "INVALID_PARAMETERS", f"{name}: a parameter contains the line terminator"
            )
        try:
            return text.encode(self.line.encoding)
        except UnicodeEncodeError as exc:
            raise RequestError(
                "INVALID_PARAMETERS", f"{name}: request {text!r} is not {self.line.encoding}"
            ) from exc

    async def execute(self, command: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send the command's request line and return the reply's values."""
        cmd = self.profile.commands.get(command)
        if cmd is None or cmd.request is None:
            raise DeviceException(f"profile {self.config.profile!r} has no request {command!r}")
        request = self._render(command, cmd, params)
        checkpoint()
        raw = await self.link.transact(
            request,
            self._terminator,
            timeout=cmd.timeout or self.link.config.timeout,
            max_line=self.line.max_line,
            device_id=self.config.id,
        )
        try:
            reply = raw.decode(self.line.encoding)
        except UnicodeDecodeError:
            reply = raw.decode(self.line.encoding, errors="replace")
            raise DeviceException(
                f"device {self.config.id}: {command} reply is not {self.line.encoding} text",
                details={"reply": reply},
            ) from None
        pattern = self._patterns.get(command)
        if pattern is None:
            return {"reply": reply}
        match = pattern.fullmatch(reply)
        if match is None:
            raise DeviceException(
                f"device {self.config.id}: {command} reply {reply!r} does not match "
                f"{pattern.pattern!r}",
                details={"reply": reply},
            )
        groups = match.groupdict()
        if not groups:  # nothing to extract: the reply itself is the result
            return {"reply": reply}
        return {key: _number(value) for key, value in groups.items()}

    async def read(self, points: Sequence[str]) -> dict[str, Any]:
        """Line devices have no points."""
        raise DeviceException("line devices have no points")

    async def write(self, values: Mapping[str, Any]) -> None:
        """Line devices have no points."""
        raise DeviceException("line devices have no points")

    @property
    def health_asks_device(self) -> bool:
        """Whether health() asks the device something: only with a profile ``health`` command.

        Without one it merely opens the link, which proves nothing about the device: the core
        then keeps it ``connecting`` until a command or a poll is answered.
        """
        cmd = self.profile.commands.get("health")
        return cmd is not None and cmd.request is not None

    async def health(self) -> None:
        """Run the profile's ``health`` command if it has one, else make sure the link is up."""
        cmd = self.profile.commands.get("health")
        if cmd is not None and cmd.request is not None:
            await self.execute("health", {})
        elif not self.link.is_open:
            await self.link.open()
