"""RTP at the byte level: parse a header, rebuild it with new fields (RFC 3550 §5.1).

The SFU never builds aiortc ``RtpPacket`` objects on the forwarding path: it reads the
fields it needs with ``struct`` and writes a fresh header in front of the untouched
payload. Header extensions follow RFC 8285 (one-byte §4.2, two-byte §4.3).
"""

from __future__ import annotations

import struct

RTP_VERSION = 2
FIXED_HEADER = 12
ONE_BYTE_PROFILE = 0xBEDE  # RFC 8285 §4.2
TWO_BYTE_PROFILE_MASK = 0xFFF0  # RFC 8285 §4.3: 0x100 followed by 4 app bits
TWO_BYTE_PROFILE = 0x1000

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

_FIXED = struct.Struct("!BBHII")


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192..223 share the port with RTP."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_newer(a: int, b: int) -> bool:
    """True if 16-bit sequence number ``a`` comes after ``b`` (RFC 3550 App. A.1 arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000


class RtpHeader:
    """The fields of one RTP packet that the SFU reads, and where the payload lies."""

    __slots__ = (
        "csrcs",
        "extensions",
        "marker",
        "padding",
        "payload_end",
        "payload_offset",
        "payload_type",
        "sequence_number",
        "ssrc",
        "timestamp",
    )

    def __init__(self) -> None:
        self.marker = False
        self.padding = False
        self.payload_type = 0
        self.sequence_number = 0
        self.timestamp = 0
        self.ssrc = 0
        self.csrcs: bytes = b""
        self.extensions: dict[int, bytes] = {}
        self.payload_offset = FIXED_HEADER
        self.payload_end = FIXED_HEADER

    @classmethod
    def parse(cls, data: bytes) -> RtpHeader:
        """Parse and validate; raise ``ValueError`` on anything malformed."""
        length = len(data)
        if length < FIXED_HEADER:
            raise ValueError("rtp: shorter than the fixed header")
        first, second, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
        if first >> 6 != RTP_VERSION:  # RFC 3550 §5.1: V=2
            raise ValueError("rtp: bad version")
        h = cls()
        h.padding = bool(first & 0x20)
        h.marker = bool(second & 0x80)
        h.payload_type = second & 0x7F
        if 72 <= h.payload_type <= 76:  # RFC 5761 §4: these PTs collide with RTCP
            raise ValueError("rtp: payload type in the RTCP range")
        h.sequence_number = seq
        h.timestamp = ts
        h.ssrc = ssrc
        pos = FIXED_HEADER + 4 * (first & 0x0F)  # CSRC list, RFC 3550 §5.1 CC
        if pos > length:
            raise ValueError("rtp: CSRC list truncated")
        h.csrcs = data[FIXED_HEADER:pos]
        if first & 0x10:  # X bit: RFC 3550 §5.3.1
            if pos + 4 > length:
                raise ValueError("rtp: extension header truncated")
            profile, words = struct.unpack_from("!HH", data, pos)
            end = pos + 4 + 4 * words
            if end > length:
                raise ValueError("rtp: extension longer than the packet")
            h.extensions = parse_extensions(profile, data[pos + 4 : end])
            pos = end
        payload_end = length
        if h.padding:  # RFC 3550 §5.1 P: the last octet counts the padding octets
            pad = data[-1]
            if pad == 0 or pos + pad > length:
                raise ValueError("rtp: bad padding")
            payload_end -= pad
        h.payload_offset = pos
        h.payload_end = payload_end
        return h


def parse_extensions(profile: int, block: bytes) -> dict[int, bytes]:
    """Elements of an RFC 8285 extension block by id; other profiles are ignored."""
    out: dict[int, bytes] = {}
    i = 0
    n = len(block)
    if profile == ONE_BYTE_PROFILE:  # RFC 8285 §4.2
        while i < n:
            b = block[i]
            if b == 0:  # padding byte
                i += 1
                continue
            ident, size = b >> 4, (b & 0x0F) + 1
            if ident == 15:  # reserved: stop processing (§4.2)
                break
            if i + 1 + size > n:
                raise ValueError("rtp: one-byte extension element overruns the block")
            out[ident] = block[i + 1 : i + 1 + size]
            i += 1 + size
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:  # RFC 8285 §4.3
        while i < n:
            ident = block[i]
            if ident == 0:
                i += 1
                continue
            if i + 2 > n:
                raise ValueError("rtp: two-byte extension element truncated")
            size = block[i + 1]
            if i + 2 + size > n:
                raise ValueError("rtp: two-byte extension element overruns the block")
            out[ident] = block[i + 2 : i + 2 + size]
            i += 2 + size
    return out


def build_extensions(elements: list[tuple[int, bytes]]) -> bytes:
    """Serialize elements as an RFC 8285 block (profile word included), padded to 32 bits.

    One-byte form (§4.2) when every id is 1..14 and every value 1..16 bytes, else the
    two-byte form (§4.3).
    """
    if not elements:
        return b""
    if all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in elements):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in elements)
    else:
        profile = TWO_BYTE_PROFILE
        body = b"".join(bytes([i, len(v)]) + v for i, v in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack("!HH", profile, len(body) // 4) + body


def build_packet(
    *,
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    marker: bool,
    extensions: bytes,
    payload: bytes,
    csrcs: bytes = b"",
) -> bytes:
    """A whole RTP packet from its parts (RFC 3550 §5.1). ``extensions`` from build_extensions."""
    first = (RTP_VERSION << 6) | (0x10 if extensions else 0) | (len(csrcs) // 4)
    second = (0x80 if marker else 0) | payload_type
    return (
        _FIXED.pack(first, second, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
        + csrcs
        + extensions
        + payload
    )


AST_UNITS = 1 << 18  # abs-send-time: 6.18 fixed-point seconds, 24 bits (webrtc.org hdrext)


def abs_send_time(now: float) -> bytes:
    """Our send time as an abs-send-time value (3 bytes).

    The SFU writes its own clock into every packet it sends a subscriber instead of
    passing the publisher's on: the subscriber's receive-side estimator (which makes its
    REMB) compares send-time and arrival-time gaps across *all* the SSRCs of its
    connection, so one clock must stamp them all (mediasoup rewrites it the same way).
    """
    return (int(now * AST_UNITS) & 0xFFFFFF).to_bytes(3, "big")


def audio_level(value: bytes) -> tuple[bool, int]:
    """RFC 6464 §3: (voice activity flag, level in -dBov 0..127; 127 is silence)."""
    if len(value) < 1:
        raise ValueError("rtp: empty audio level")
    return bool(value[0] & 0x80), value[0] & 0x7F
