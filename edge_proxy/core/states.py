"""The device state machine as data.

Theory of operation
-------------------
A device starts ``connecting`` (or ``disabled`` when its config says so). The first answer
takes it ``online``: a reply from the device, an exception reply included; an open connection
is not an answer. ``offline_after`` failures in a row (timeouts, I/O errors, Modbus gateway
exceptions 10 and 11; never an exception reply of the device itself) take it ``offline``;
while offline, commands fail fast and a probe retries at the link's reconnect backoff
intervals until the device answers, which brings it back ``online``. A reload that disables a
device takes it ``disabled`` from any state; enabling it again starts over at ``connecting``.
Every other (state, event) pair leaves the state as it is. Nothing else changes a device's
state.
"""

from __future__ import annotations

from edge_proxy.wire.names import DEVICE_STATES

STATES = DEVICE_STATES
EVENTS = ("success", "failed_out", "disable", "enable")

# State machine as data: (state, event) -> next state. Events not listed leave the state as is.
TRANSITIONS: dict[tuple[str, str], str] = {
    ("connecting", "success"): "online",
    ("connecting", "failed_out"): "offline",
    ("online", "failed_out"): "offline",
    ("offline", "success"): "online",
    ("connecting", "disable"): "disabled",
    ("online", "disable"): "disabled",
    ("offline", "disable"): "disabled",
    ("disabled", "enable"): "connecting",
}


def next_state(state: str, event: str) -> str:
    """The state after ``event`` (the same state when the pair is not in the table)."""
    return TRANSITIONS.get((state, event), state)
