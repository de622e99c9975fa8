"""The ``commands:``, ``metrics:`` and ``control:`` sections: engine limits and local endpoints."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge_proxy.config.values import Duration, Size, _Model


class CommandsConfig(_Model):
    """Limits and memory of the command engine."""

    dedup_window: Duration = Field(600.0, description="How long a finished requestRef is kept.")
    dedup_max: int = Field(100000, ge=1, description="Most requestRefs remembered.")
    dedup_max_bytes: Size = Field(
        16 * 1024**2, ge=1024, description="Bytes of terminal messages remembered, at most."
    )
    max_queued_per_link: int = Field(1000, ge=1, description="Commands in progress per link.")
    max_queued: int = Field(10000, ge=1, description="Commands in progress in all.")
    max_batch_targets: int = Field(5000, ge=1, description="Targets of one BATCH.")
    max_batch_globs: int = Field(
        64, ge=1, description="Glob patterns (pillar-*) in one BATCH's targets."
    )
    max_steps: int = Field(100, ge=1, description="Steps of one COMPLEX command.")
    default_timeout: Duration = Field(5.0, gt=0, description="When a COMMAND has no timeout.")
    shutdown_grace: Duration = Field(10.0, description="In-flight wait on SIGINT/SIGTERM.")
    aging: Duration = Field(2.0, gt=0, description="Queue wait that lifts a command one priority.")


class MetricsConfig(_Model):
    """Local HTTP endpoint for /metrics and /healthz."""

    listen: str | None = Field(
        None, description="host:port for /metrics and /healthz, e.g. 127.0.0.1:9108; off if unset."
    )
    stall_after: Duration = Field(
        5.0, gt=0, description="/healthz answers 503 when the event loop has not run this long."
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str | None) -> str | None:
        if v is not None:
            host, sep, port = v.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError("expected host:port, e.g. 127.0.0.1:9108")
        return v

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) to listen on, or None."""
        if self.listen is None:
            return None
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ControlConfig(_Model):
    """The local control socket used by ``edge-proxy status`` and ``edge-proxy call``."""

    socket: str | None = Field(
        None, description="Unix socket path; default: edge-proxy-<edge id>.sock in the temp dir."
    )
    enabled: bool = Field(True, description="Serve the control socket at all.")
