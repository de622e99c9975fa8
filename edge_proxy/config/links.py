"""The ``links:`` section: physical connections, and a device's link reference (named or inline)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
)

from edge_proxy.config.gateway import ReconnectConfig
from edge_proxy.config.values import Duration


class LinkConfig(BaseModel):
    """A physical connection shared by the devices that name it; drivers may add keys."""

    model_config = ConfigDict(extra="allow", frozen=True)

    driver: str = Field(min_length=1)
    host: str | None = Field(None, description="TCP host name or address (TCP drivers).")
    port: int | str | None = Field(
        None,
        description="TCP port, or serial device path.",
        json_schema_extra={"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]},
    )
    baudrate: int = Field(9600, gt=0, description="Serial line speed.")
    bytesize: int = Field(8, ge=5, le=8, description="Serial data bits.")
    parity: Annotated[
        Literal["N", "E", "O", "M", "S"],
        WithJsonSchema({"enum": ["N", "E", "O", "M", "S", "n", "e", "o", "m", "s"]}),
    ] = Field("N", description="N, E or O (M and S where the port supports them).")
    stopbits: Annotated[float, WithJsonSchema({"enum": [1, 1.5, 2]})] = Field(
        1, description="Serial stop bits."
    )
    timeout: Duration = Field(1.0, gt=0, description="Per-transaction timeout.")
    connect_timeout: Duration | None = Field(None, gt=0, description="Default: timeout.")
    turnaround: Duration = Field(0.0, description="Quiet time between two transactions.")
    offline_after: int = Field(3, ge=1, description="Failures in a row before offline.")
    health_interval: Duration = Field(30.0, gt=0, description="Idle device check period.")
    reconnect: ReconnectConfig = Field(
        ReconnectConfig(), description="Backoff between attempts to reopen the connection."
    )

    @field_validator("stopbits")
    @classmethod
    def _stopbits(cls, v: float) -> float:
        if v not in (1, 1.5, 2):
            raise ValueError("stopbits must be 1, 1.5 or 2")
        return v

    @field_validator("port", mode="before")
    @classmethod
    def _port_number(cls, v: object) -> object:
        # "${PLC_PORT:-502}" arrives as a string; a serial device path is never all digits
        if isinstance(v, str) and v.strip().isdigit():
            return int(v)
        return v

    @field_validator("parity", mode="before")
    @classmethod
    def _parity_upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @property
    def extra_keys(self) -> dict[str, Any]:
        """Driver-specific keys not known to the core."""
        return dict(self.model_extra or {})


def _link_kind(value: object) -> str:
    """The branch of LinkRef a raw value takes: a link name, or an inline link mapping."""
    return "named" if isinstance(value, str) else "inline"


#: A device's ``link:``, a name from ``links:`` or an inline mapping. A tagged union, so that
#: errors come from the branch the value is and paths stay plain.
LinkRef = Annotated[
    Annotated[str, Tag("named")] | Annotated[LinkConfig, Tag("inline")],
    Discriminator(_link_kind),
]
#: The tags of LinkRef, which pydantic puts in error locations; paths leave them out.
UNION_TAGS = frozenset({"named", "inline"})
