"""The ``edge:`` and ``gateway:`` sections: who this edge is and its upstream WebSocket session."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from edge_proxy.config.values import Duration, PositiveDuration, Size, _Model


class EdgeConfig(_Model):
    """Who this edge is on the Gateway."""

    id: str = Field(
        min_length=1,
        description="Our clientId on the Gateway.",
        json_schema_extra={"pattern": r"^[^:\s](?:[^:]*[^:\s])?$"},
    )
    name: str | None = Field(None, description="Human name, sent in REGISTER clientInfo.")

    @field_validator("id")
    @classmethod
    def _no_colon(cls, v: str) -> str:
        if ":" in v or v.strip() != v:
            raise ValueError("must not contain ':' or surrounding spaces")
        return v


class TlsConfig(_Model):
    """TLS settings for a wss:// Gateway."""

    ca_file: str | None = Field(None, description="CA bundle that signs the Gateway certificate.")
    cert_file: str | None = Field(None, description="Client certificate (mutual TLS).")
    key_file: str | None = Field(None, description="Private key of the client certificate.")
    verify: bool = Field(True, description="Verify the Gateway certificate and host name.")

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set but cert_file is not")
        return self


class ReconnectConfig(_Model):
    """Exponential backoff with jitter between connection attempts."""

    initial: PositiveDuration = Field(
        0.5, description="First retry delay; above 0 (0 would retry in a busy loop)."
    )
    max: Duration = Field(30.0, description="Longest retry delay.")
    jitter: float = Field(
        0.2, ge=0.0, le=1.0, description="Random spread, a fraction of the delay."
    )

    @model_validator(mode="after")
    def _order(self) -> ReconnectConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}s) is greater than max ({self.max}s)")
        if self.max <= 0:
            raise ValueError("max must be above 0")
        return self


class OutboxConfig(_Model):
    """Bounds of the queue of messages waiting for the Gateway."""

    max_messages: int = Field(10000, ge=1, description="Most messages kept while the link is down.")
    max_bytes: Size = Field(16 * 1024**2, ge=1024, description="Most bytes kept.")
    spool: str | None = Field(None, description="On-disk spool file for terminal messages.")


class GatewayConfig(_Model):
    """The upstream WebSocket session."""

    url: str = Field(
        description="ws:// or wss:// address of the Gateway.",
        json_schema_extra={"pattern": r"^wss?://[^/\s]+"},
    )
    token: SecretStr | None = Field(None, description="Bearer token; never logged.")
    tls: TlsConfig | None = Field(None, description="TLS settings for wss:// URLs.")
    heartbeat_interval: Duration = Field(30.0, gt=0, description="HEARTBEAT period.")
    ping_interval: Duration = Field(20.0, gt=0, description="WebSocket ping period.")
    ping_timeout: Duration = Field(20.0, gt=0, description="Pong wait before the link is dead.")
    open_timeout: Duration = Field(10.0, gt=0, description="Connect + handshake limit.")
    max_frame: Size = Field(
        1024**2,
        ge=1024,
        validation_alias=AliasChoices("max_frame", "max_message_size"),
        description="Largest frame sent or accepted (max_message_size is its old name).",
    )
    compression: Literal["none", "deflate"] = Field(
        "none", description="permessage-deflate on the Gateway link: none or deflate."
    )
    reconnect: ReconnectConfig = ReconnectConfig()
    outbox: OutboxConfig = OutboxConfig()

    @property
    def max_message_size(self) -> int:
        """The old name of ``max_frame``."""
        return self.max_frame

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not re.match(r"^wss?://[^/\s]+", v):
            raise ValueError("expected a ws:// or wss:// URL")
        return v

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token(cls, v: object) -> object:
        return None if v == "" else v
