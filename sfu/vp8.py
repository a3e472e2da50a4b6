"""VP8 RTP payload descriptor (RFC 7741 §4.2) and key-frame detection (§4.3, RFC 6386 §9.1).

Under E2EE the sender keeps the first 10 bytes of a key frame (3 of a delta frame) in
the clear, so everything read here is readable on encrypted frames too.
"""

from __future__ import annotations

START_CODE = b"\x9d\x01\x2a"  # RFC 6386 §9.1: key frame start code


class Vp8Descriptor:
    """RFC 7741 §4.2 payload descriptor of one RTP packet."""

    __slots__ = ("partition_id", "picture_id", "size", "start_of_partition")

    def __init__(self, start_of_partition: bool, partition_id: int, picture_id: int | None,
                 size: int) -> None:
        self.start_of_partition = start_of_partition
        self.partition_id = partition_id
        self.picture_id = picture_id
        self.size = size

    @classmethod
    def parse(cls, payload: bytes) -> Vp8Descriptor:
        n = len(payload)
        if n < 1:
            raise ValueError("vp8: empty payload")
        b0 = payload[0]
        # RFC 7741 §4.2: |X|R|N|S|R| PID |
        start = bool(b0 & 0x10)
        pid = b0 & 0x07
        pos = 1
        picture_id: int | None = None
        if b0 & 0x80:  # X: extension octet |I|L|T|K| RSV |
            if n < 2:
                raise ValueError("vp8: truncated extension octet")
            x = payload[1]
            pos = 2
            if x & 0x80:  # I: PictureID, 7 or 15 bits (M bit)
                if n < pos + 1:
                    raise ValueError("vp8: truncated picture id")
                if payload[pos] & 0x80:
                    if n < pos + 2:
                        raise ValueError("vp8: truncated 15-bit picture id")
                    picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                    pos += 2
                else:
                    picture_id = payload[pos]
                    pos += 1
            if x & 0x40:  # L: TL0PICIDX
                pos += 1
            if x & 0x30:  # T or K: TID/Y/KEYIDX octet
                pos += 1
            if pos > n:
                raise ValueError("vp8: truncated descriptor")
        return cls(start, pid, picture_id, pos)


def is_keyframe(payload: bytes) -> bool:
    """True if this RTP payload starts a VP8 key frame.

    RFC 7741 §4.3: the VP8 payload header is present when S=1 and PID=0; its first octet
    is |Size0|H|VER|P| and P=0 marks a key frame (RFC 6386 §9.1), whose bytes 3..5 are the
    start code 9d 01 2a. Malformed input is simply "not a key frame".
    """
    try:
        d = Vp8Descriptor.parse(payload)
    except ValueError:
        return False
    if not d.start_of_partition or d.partition_id != 0:
        return False
    header = payload[d.size : d.size + 6]
    return len(header) == 6 and not header[0] & 0x01 and header[3:6] == START_CODE


def build_descriptor(*, start: bool, picture_id: int) -> bytes:
    """A 4-byte descriptor with a 15-bit PictureID (RFC 7741 §4.2), used by bots and tests."""
    return bytes(
        [0x80 | (0x10 if start else 0), 0x80, 0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF]
    )
