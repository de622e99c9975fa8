"""The root of the config model: the whole file, one section per attribute."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr

from edge_proxy.config.console import ConsoleConfig
from edge_proxy.config.devices import DeviceConfig
from edge_proxy.config.gateway import EdgeConfig, GatewayConfig
from edge_proxy.config.limits import CommandsConfig, ControlConfig, MetricsConfig
from edge_proxy.config.links import LinkConfig
from edge_proxy.config.profiles import ProfileConfig
from edge_proxy.config.telemetry import TelemetryConfig
from edge_proxy.config.values import _Model


class Config(_Model):
    """The whole configuration file."""

    edge: EdgeConfig
    gateway: GatewayConfig
    links: dict[str, LinkConfig] = Field({}, description="Physical connections, by name.")
    profiles: dict[str, ProfileConfig] = Field({}, description="Kinds of device, by name.")
    devices: list[DeviceConfig] = Field([], description="The field devices.")
    commands: CommandsConfig = CommandsConfig()
    metrics: MetricsConfig = MetricsConfig()
    control: ControlConfig = ControlConfig()
    console: ConsoleConfig = ConsoleConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    def secrets(self) -> list[str]:
        """Every secret value of the file (its ``SecretStr`` keys), for logs to redact."""
        found: list[str] = []
        _collect_secrets(self, found)
        return found

    def control_socket(self) -> str:
        """Where the control socket is (configured, or in the temp directory)."""
        if self.control.socket:
            return self.control.socket
        return str(Path(tempfile.gettempdir()) / f"edge-proxy-{self.edge.id}.sock")

    def link_of(self, device: DeviceConfig) -> LinkConfig:
        """The link mapping a device uses, named or inline."""
        return device.link if isinstance(device.link, LinkConfig) else self.links[device.link]

    def link_name_of(self, device: DeviceConfig) -> str:
        """A stable name for a device's link (inline links are named after their device)."""
        return device.link if isinstance(device.link, str) else f"{device.id}/link"


def _collect_secrets(value: object, found: list[str]) -> None:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if secret and secret not in found:
            found.append(secret)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _collect_secrets(getattr(value, name), found)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_secrets(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _collect_secrets(item, found)
