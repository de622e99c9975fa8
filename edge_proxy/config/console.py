"""The ``console:`` section: the operator web console, off by default, safe by default.

``listen`` is off unless set; a loopback address (``127.0.0.1``, ``::1``, ``localhost``) may go
without a ``token``, any other address needs one (refused at load without it, naming
``console.token``). The token is a secret: never logged, never shown in a page or the config
view. ``allow_commands`` (default false) turns the command tester on.
"""

from __future__ import annotations

import ipaddress

from pydantic import ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from edge_proxy.config.values import _Model

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_PORT = r"([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
#: the JSON Schema's view of listen (the loader's check is split_listen)
LISTEN_PATTERN = r"^(\[[0-9A-Fa-f:.]+\]|[^:\s\[\]]+):" + _PORT + "$"
LOOPBACK_PATTERN = (
    r"^(127\.[0-9]+\.[0-9]+\.[0-9]+|\[::1\]|localhost|localhost\.localdomain|ip6-localhost):"
)


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) as (host, port); ValueError when malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host:
        raise ValueError("expected host:port, e.g. 127.0.0.1:8080")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only ever reaches this machine (a loopback address or localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ConsoleConfig(_Model):
    """The operator web console (pages, live updates, the command tester)."""

    model_config = ConfigDict(
        **_Model.model_config,
        json_schema_extra={
            # a listen address that is not loopback needs a token (as the loader says)
            "if": {
                "properties": {"listen": {"type": "string", "not": {"pattern": LOOPBACK_PATTERN}}},
                "required": ["listen"],
            },
            "then": {
                "required": ["token"],
                "properties": {"token": {"type": "string", "minLength": 1}},
            },
        },
    )

    listen: str | None = Field(
        None,
        description="host:port of the web console, e.g. 127.0.0.1:8080; off if unset. "
        "Any address but loopback needs a token.",
        json_schema_extra={"pattern": LISTEN_PATTERN},
    )
    token: SecretStr | None = Field(
        None,
        validate_default=True,
        description="Operators' access token (Authorization: Bearer, or the login page); "
        "required when listen is not a loopback address. Never logged or shown.",
    )
    allow_commands: bool = Field(
        False, description="Offer the command tester (commands go through the same engine)."
    )
    history: int = Field(
        300,
        ge=2,
        le=10000,
        description="Recent samples kept per numeric point for the charts (memory: about "
        "4 bytes per sample per point).",
    )
    max_clients: int = Field(
        16, ge=1, le=1000, description="Live-update streams (browser tabs) served at once."
    )
    log_lines: int = Field(
        500, ge=10, le=10000, description="WARNING-and-above log lines kept for the logs page."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            split_listen(v)
        return v

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        listen = info.data.get("listen")
        if v is None and isinstance(listen, str):
            host, _ = split_listen(listen)
            if not is_loopback(host):
                raise ValueError(
                    f"required when console.listen ({listen}) is not a loopback address: "
                    "set a token (e.g. token: ${CONSOLE_TOKEN}) or listen on 127.0.0.1"
                )
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None when the console is off."""
        return None if self.listen is None else split_listen(self.listen)
