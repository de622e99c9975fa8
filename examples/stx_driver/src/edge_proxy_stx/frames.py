"""The STX protocol on the wire: framing and messages, with no I/O (pure functions and classes).

A frame is ``STX (0x02)``, an ASCII payload, ``ETX (0x03)``, then one checksum byte: the XOR of
the payload bytes. The checksum byte may itself be 0x02 or 0x03; it is found by its position.

Payloads::

    R<addr:04X>                 read one 16-bit register     -> r<addr:04X>=<value:04X>
    W<addr:04X>=<value:04X>     write one 16-bit register    -> w<addr:04X>
                                either request may fail      -> E<code>

Hex digits are sent in upper case; replies are accepted in either case.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

STX = 0x02
ETX = 0x03
#: The longest payload a reader accepts before it gives up on a frame and looks for the next STX.
MAX_PAYLOAD = 64
#: What the error codes of ``E<code>`` replies mean.
ERROR_MEANINGS = {
    "1": "malformed request",
    "2": "no such register",
    "3": "register is read-only",
    "4": "bad checksum in the request",
}

_ADDRESS = rb"([0-9A-Fa-f]{4})"
_READ_REQUEST = re.compile(rb"R" + _ADDRESS)
_WRITE_REQUEST = re.compile(rb"W" + _ADDRESS + rb"=" + _ADDRESS)
_READ_REPLY = re.compile(rb"r" + _ADDRESS + rb"=" + _ADDRESS)
_WRITE_ACK = re.compile(rb"w" + _ADDRESS)
_ERROR_REPLY = re.compile(rb"E([\x20-\x7e]*)")


class FrameError(ValueError):
    """Bytes that are not a valid frame or message."""


class ChecksumError(FrameError):
    """A complete frame whose checksum byte does not match its payload."""

    def __init__(self, payload: bytes, received: int) -> None:
        self.payload = payload
        self.expected = checksum(payload)
        self.received = received
        super().__init__(
            f"bad checksum on {payload!r}: got 0x{received:02X}, expected 0x{self.expected:02X}"
        )


def checksum(payload: bytes) -> int:
    """The XOR of the payload bytes (0 for an empty payload)."""
    value = 0
    for byte in payload:
        value ^= byte
    return value


def encode_frame(payload: bytes) -> bytes:
    """Wrap a payload in STX, ETX and its checksum; ValueError if it holds STX or ETX."""
    if STX in payload or ETX in payload:
        raise ValueError(f"a payload cannot contain STX or ETX: {payload!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a payload is at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    return bytes([STX]) + payload + bytes([ETX, checksum(payload)])


class FrameReader:
    """Cuts a byte stream into frame payloads; bytes before an STX are skipped."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.buffer = bytearray()
        #: How many bytes were thrown away as noise or as broken frames.
        self.skipped = 0

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self.buffer += data

    def clear(self) -> None:
        """Throw away everything buffered (counted in ``skipped``)."""
        self.skipped += len(self.buffer)
        self.buffer.clear()

    def _drop(self, count: int) -> None:
        self.skipped += count
        del self.buffer[:count]

    def next_payload(self) -> bytes | None:
        """The next payload, or None until more bytes arrive.

        A broken frame raises FrameError (ChecksumError for a bad checksum) and is consumed,
        so the next call goes on with the bytes after it.
        """
        start = self.buffer.find(STX)
        if start < 0:
            self._drop(len(self.buffer))
            return None
        self._drop(start)
        end = 1
        while end < len(self.buffer):
            byte = self.buffer[end]
            if byte == ETX:
                break
            if byte == STX:
                self._drop(end)
                raise FrameError("frame without ETX: a new STX came first")
            if end > self.max_payload:
                self._drop(end)
                raise FrameError(f"frame without ETX within {self.max_payload} bytes")
            end += 1
        else:
            return None  # no ETX yet
        if len(self.buffer) < end + 2:
            return None  # the checksum byte has not arrived yet
        payload = bytes(self.buffer[1:end])
        received = self.buffer[end + 1]
        del self.buffer[: end + 2]
        if received != checksum(payload):
            self.skipped += len(payload) + 3
            raise ChecksumError(payload, received)
        return payload


def decode_frame(data: bytes) -> bytes:
    """The payload of exactly one frame (noise before its STX allowed); FrameError otherwise."""
    reader = FrameReader()
    reader.feed(data)
    payload = reader.next_payload()
    if payload is None:
        raise FrameError(f"incomplete frame (no ETX or no checksum byte): {data!r}")
    if reader.buffer:
        raise FrameError(f"{len(reader.buffer)} bytes after the frame: {bytes(reader.buffer)!r}")
    return payload


def _check_word(what: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} must be 0..0xFFFF, got {value}")


@dataclass(frozen=True)
class _Register:
    """A message about one register: ``<TAG><addr>``."""

    TAG: ClassVar[bytes]
    address: int

    def __post_init__(self) -> None:
        _check_word("address", self.address)

    def payload(self) -> bytes:
        """The payload bytes of this message."""
        return self.TAG + b"%04X" % self.address


@dataclass(frozen=True)
class _RegisterValue(_Register):
    """A message about one register and its value: ``<TAG><addr>=<value>``."""

    value: int

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_word("value", self.value)

    def payload(self) -> bytes:
        """The payload bytes of this message."""
        return super().payload() + b"=%04X" % self.value


@dataclass(frozen=True)
class ReadRequest(_Register):
    """``R<addr>``: read one register."""

    TAG = b"R"


@dataclass(frozen=True)
class WriteRequest(_RegisterValue):
    """``W<addr>=<value>``: write one register."""

    TAG = b"W"


@dataclass(frozen=True)
class ReadReply(_RegisterValue):
    """``r<addr>=<value>``: the value of a register."""

    TAG = b"r"


@dataclass(frozen=True)
class WriteAck(_Register):
    """``w<addr>``: a write was done."""

    TAG = b"w"


@dataclass(frozen=True)
class ErrorReply:
    """``E<code>``: the device refused the request."""

    code: str

    @property
    def meaning(self) -> str:
        """The code in words (``unknown error`` for a code not in ERROR_MEANINGS)."""
        return ERROR_MEANINGS.get(self.code, "unknown error")

    def payload(self) -> bytes:
        """The payload bytes of this message."""
        return b"E" + self.code.encode("ascii")


Request: TypeAlias = ReadRequest | WriteRequest
Reply: TypeAlias = ReadReply | WriteAck | ErrorReply


def parse_request(payload: bytes) -> Request:
    """The request a payload carries; FrameError if it is not one."""
    if m := _READ_REQUEST.fullmatch(payload):
        return ReadRequest(int(m.group(1), 16))
    if m := _WRITE_REQUEST.fullmatch(payload):
        return WriteRequest(int(m.group(1), 16), int(m.group(2), 16))
    raise FrameError(f"not a request: {payload!r}")


def parse_reply(payload: bytes) -> Reply:
    """The reply a payload carries; FrameError if it is not one."""
    if m := _READ_REPLY.fullmatch(payload):
        return ReadReply(int(m.group(1), 16), int(m.group(2), 16))
    if m := _WRITE_ACK.fullmatch(payload):
        return WriteAck(int(m.group(1), 16))
    if m := _ERROR_REPLY.fullmatch(payload):
        return ErrorReply(m.group(1).decode("ascii"))
    raise FrameError(f"not a reply: {payload!r}")
