"""The ``devices:`` section: one entry per field device."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_proxy.config.links import LinkRef
from edge_proxy.config.values import _Model


class DeviceConfig(_Model):
    """One field device."""

    id: str = Field(
        min_length=1,
        description="Unique; the part after ':' in targetClientId.",
        json_schema_extra={"pattern": r"^[^:,*\s](?:[^:,*]*[^:,*\s])?$"},
    )
    type: str = Field("device", min_length=1, description="deviceType on the wire.")
    profile: str = Field(description="A name from profiles.")
    link: LinkRef = Field(description="A name from links, or an inline link mapping.")
    unit: int | None = Field(None, ge=0, le=247, description="Modbus unit id; default 1.")
    enabled: bool = Field(True, description="false: configured but not started (disabled).")
    telemetry: bool = Field(True, description="false: the device does not poll its groups.")
    name: str | None = Field(None, description="Human name.")
    description: str | None = Field(None, description="Free text.")

    @field_validator("id")
    @classmethod
    def _id_chars(cls, v: str) -> str:
        if ":" in v or "," in v or "*" in v or v.strip() != v:
            raise ValueError("must not contain ':', ',', '*' or surrounding spaces")
        return v
