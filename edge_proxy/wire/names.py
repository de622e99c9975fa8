"""Every wire name of the Subway protocol in one place: message types, statuses, keys, codes.

A change of ``../shared/protocol.md`` that renames something is a change of this file only.
"""

from __future__ import annotations

VERSION = "1.0"

# message types the edge sends
REGISTER = "REGISTER"
HEARTBEAT = "HEARTBEAT"
ACK = "ack"
PROGRESS = "progress_update"
RESPONSE = "command_response"
ERROR = "error"
DEVICE_STATUS = "device_status"
TELEMETRY = "telemetry"
TERMINAL_TYPES = frozenset({RESPONSE, ERROR})

# message types the Gateway sends
COMMAND = "COMMAND"
CANCEL = "CANCEL"
QUERY = "QUERY"
GATEWAY_ERROR = "ERROR"
# Gateway replies that need no answer; they are accepted and logged at debug level.
SILENT_TYPES = frozenset(
    {"HEARTBEAT", "HEARTBEAT_ACK", "PONG", "PING", "REGISTER_ACK", "REGISTERED", "ACK"}
)
HANDLED_TYPES = frozenset({COMMAND, CANCEL, QUERY, GATEWAY_ERROR}) | SILENT_TYPES

PRIORITIES = ("low", "normal", "high", "urgent")
COMMAND_TYPES = ("SIMPLE", "BATCH", "COMPLEX")
OPERATION_TYPES = ("read", "write", "execute")
TERMINAL_STATUSES = ("completed", "partial", "failed", "timeout", "cancelled")
ACK_STATUSES = ("accepted", "duplicate")
DEVICE_STATES = ("connecting", "online", "offline", "disabled")
CAPABILITIES = (
    "command",
    "batch",
    "complex",
    "progress",
    "ack",
    "query",
    "cancel",
    "device_status",
    "telemetry",
)

# the keys a step of a COMPLEX command may have
STEP_KEYS = frozenset(
    {
        "operationType",
        "commandCode",
        "parameters",
        "deviceId",
        "continueOnError",
        "delayMs",
        "delay",
    }
)
# QUERY kinds
QUERY_KINDS = ("devices", "device", "values", "result")

# error codes of a request refused before it runs (a RequestError; ``error`` messages)
REQUEST_ERROR_CODES = (
    "MALFORMED_MESSAGE",
    "INVALID_COMMAND",
    "UNSUPPORTED_VERSION",
    "UNKNOWN_MESSAGE_TYPE",
    "WRONG_EDGE",
    "UNKNOWN_DEVICE",
    "UNSUPPORTED_COMMAND",
    "INVALID_PARAMETERS",
    "ACCESS_DENIED",
    "OVERLOADED",
)
# error codes of ``error`` messages and of error objects in results
ERROR_CODES = (
    *REQUEST_ERROR_CODES,
    "DEVICE_OFFLINE",
    "DEVICE_TIMEOUT",
    "DEVICE_EXCEPTION",
    "IO_ERROR",
    "INTERNAL_ERROR",
)

MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_DEPTH = 64  # nesting of an incoming frame
MAX_TEXT = 512  # longest piece of Gateway input repeated back in an error
# requestRefs of commands from the local control socket: never sent to the Gateway or spooled
LOCAL_PREFIX = "local:"
# requestRefs of commands from the operator web console: local too
CONSOLE_PREFIX = "console:"
#: every prefix of a requestRef that stays on the edge (str.startswith takes the tuple)
LOCAL_PREFIXES = (LOCAL_PREFIX, CONSOLE_PREFIX)
