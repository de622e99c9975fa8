"""Unit tests of the pure frame and message code: known bytes, broken frames, resynchronising."""

from __future__ import annotations

import pytest

from edge_proxy_stx.frames import (
    ChecksumError,
    ErrorReply,
    FrameError,
    FrameReader,
    ReadReply,
    ReadRequest,
    WriteAck,
    WriteRequest,
    checksum,
    decode_frame,
    encode_frame,
    parse_reply,
    parse_request,
)

#: Frames worked out by hand: payload, then the full frame on the wire.
KNOWN = [
    (b"R0010", b"\x02R0010\x03\x53"),
    (b"W0010=01A9", b"\x02W0010=01A9\x03\x12"),
    (b"r0010=00D7", b"\x02r0010=00D7\x03\x3d"),
    (b"w0010", b"\x02w0010\x03\x76"),
    (b"E2", b"\x02E2\x03\x77"),
    (b"w000D", b"\x02w000D\x03\x03"),  # the checksum byte is itself 0x03 (ETX)
]


def test_checksum_is_the_xor_of_the_payload() -> None:
    """0x52 ^ 0x30 ^ 0x30 ^ 0x31 ^ 0x30 = 0x53; an empty payload sums to 0."""
    assert checksum(b"R0010") == 0x53
    assert checksum(b"") == 0


@pytest.mark.parametrize(("payload", "frame"), KNOWN)
def test_known_frames_encode_and_decode(payload: bytes, frame: bytes) -> None:
    """Each known payload encodes to its frame, and the frame decodes back to it."""
    assert encode_frame(payload) == frame
    assert decode_frame(frame) == payload


def test_payload_with_stx_or_etx_is_refused() -> None:
    """A payload holding a framing byte could not be decoded, so it cannot be encoded."""
    with pytest.raises(ValueError, match="STX or ETX"):
        encode_frame(b"R\x030")
    with pytest.raises(ValueError, match="STX or ETX"):
        encode_frame(b"\x02")


def test_bad_checksum() -> None:
    """A frame whose last byte is not the XOR is refused, with both values."""
    with pytest.raises(ChecksumError) as info:
        decode_frame(b"\x02R0010\x03\x54")
    assert info.value.expected == 0x53
    assert info.value.received == 0x54
    assert info.value.payload == b"R0010"


def test_missing_etx_is_incomplete() -> None:
    """Without ETX (or without the checksum byte after it) a frame is not complete."""
    with pytest.raises(FrameError, match="incomplete"):
        decode_frame(b"\x02R0010")
    with pytest.raises(FrameError, match="incomplete"):
        decode_frame(b"\x02R0010\x03")


def test_missing_etx_before_the_next_stx_is_skipped() -> None:
    """A frame cut short by a new STX is reported once; the frame after it is read."""
    reader = FrameReader()
    reader.feed(b"\x02R00" + encode_frame(b"R0020"))
    with pytest.raises(FrameError, match="without ETX"):
        reader.next_payload()
    assert reader.next_payload() == b"R0020"
    assert reader.next_payload() is None
    assert reader.skipped == 4


def test_noise_before_stx_is_skipped() -> None:
    """Bytes before an STX are thrown away and counted."""
    reader = FrameReader()
    reader.feed(b"\xff\x00ab" + encode_frame(b"w0010"))
    assert reader.next_payload() == b"w0010"
    assert reader.skipped == 4
    assert decode_frame(b"\x00\x13" + encode_frame(b"E2")) == b"E2"


def test_noise_without_stx_is_dropped() -> None:
    """Bytes with no STX at all never become a frame and do not pile up."""
    reader = FrameReader()
    reader.feed(b"line noise")
    assert reader.next_payload() is None
    assert reader.buffer == b""
    assert reader.skipped == 10


def test_frames_split_across_reads() -> None:
    """A frame arriving one byte at a time is returned once its checksum byte is in."""
    reader = FrameReader()
    frame = encode_frame(b"w000D")
    for byte in frame[:-1]:
        reader.feed(bytes([byte]))
        assert reader.next_payload() is None
    reader.feed(frame[-1:])
    assert reader.next_payload() == b"w000D"


def test_two_frames_in_one_read() -> None:
    """Frames that arrive together come out one per call, in order."""
    reader = FrameReader()
    reader.feed(encode_frame(b"R0010") + encode_frame(b"R0011"))
    assert reader.next_payload() == b"R0010"
    assert reader.next_payload() == b"R0011"
    assert reader.next_payload() is None


def test_bad_checksum_is_consumed() -> None:
    """After a bad checksum the reader carries on with the next frame."""
    reader = FrameReader()
    reader.feed(b"\x02r0010=0001\x03\x00" + encode_frame(b"w0010"))
    with pytest.raises(ChecksumError):
        reader.next_payload()
    assert reader.next_payload() == b"w0010"


def test_overlong_frame_is_dropped() -> None:
    """An STX followed by more than max_payload bytes without ETX is given up on."""
    reader = FrameReader(max_payload=8)
    reader.feed(b"\x02" + b"A" * 9)
    with pytest.raises(FrameError, match="within 8 bytes"):
        reader.next_payload()
    reader.feed(encode_frame(b"R0001"))
    assert reader.next_payload() == b"R0001"


def test_trailing_bytes_after_one_frame() -> None:
    """decode_frame takes exactly one frame."""
    with pytest.raises(FrameError, match="after the frame"):
        decode_frame(encode_frame(b"R0010") + b"\x02")


def test_messages_round_trip() -> None:
    """Every message renders to its payload and parses back to an equal message."""
    assert ReadRequest(0x10).payload() == b"R0010"
    assert WriteRequest(0x10, 0x1A9).payload() == b"W0010=01A9"
    assert parse_request(b"R0010") == ReadRequest(0x10)
    assert parse_request(b"WFFFF=0000") == WriteRequest(0xFFFF, 0)
    for reply in (ReadReply(0x10, 0xD7), WriteAck(0xABCD), ErrorReply("3")):
        assert parse_reply(reply.payload()) == reply


def test_replies_in_lower_case_hex_are_read() -> None:
    """Hex digits of a reply are read in either case."""
    assert parse_reply(b"r00ab=00ff") == ReadReply(0xAB, 0xFF)


def test_error_reply_meaning() -> None:
    """Known error codes are explained; others are still reported."""
    reply = parse_reply(b"E3")
    assert isinstance(reply, ErrorReply)
    assert reply.meaning == "register is read-only"
    assert ErrorReply("77").meaning == "unknown error"


@pytest.mark.parametrize(
    "payload", [b"", b"x", b"r0010", b"r0010=", b"r001G=0000", b"w00100", b"R0010", b"r0010=00D7 "]
)
def test_not_a_reply(payload: bytes) -> None:
    """Anything but r<addr>=<value>, w<addr> or E<code> is not a reply."""
    with pytest.raises(FrameError, match="not a reply"):
        parse_reply(payload)


@pytest.mark.parametrize("payload", [b"r0010", b"R10", b"W0010", b"W0010=1", b"Q0010"])
def test_not_a_request(payload: bytes) -> None:
    """Anything but R<addr> or W<addr>=<value> is not a request."""
    with pytest.raises(FrameError, match="not a request"):
        parse_request(payload)


def test_message_values_are_16_bit() -> None:
    """Addresses and values outside 0..0xFFFF cannot be sent."""
    with pytest.raises(ValueError, match="address"):
        ReadRequest(0x10000)
    with pytest.raises(ValueError, match="value"):
        WriteRequest(0, -1)
