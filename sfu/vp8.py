"""VP8 RTP payload descriptor (RFC 7741 §4.2) and key-frame detection (§4.3, RFC 6386 §9.1).

Under E2EE the sender keeps the first 10 bytes of a key frame (3 of a delta frame) in
the clear, so everything read here is readable on encrypted frames too.
"""

from __future__ import annotations

START_CODE = b"\x9d\x01\x2a"  # RFC 6386 §9.1: key frame start code


class Vp8Descriptor:
    """RFC 7741 §4.2 payload descriptor of one RTP packet."""

    __slots__ = ("partition_id", "picture_id", "size", "start_of_partition", "tid",
                 "tl0_pic_idx")

    def __init__(self, start_of_partition: bool, partition_id: int, picture_id: int | None,
                 size: int, tl0_pic_idx: int | None = None, tid: int | None = None) -> None:
        self.start_of_partition = start_of_partition
        self.partition_id = partition_id
        self.picture_id = picture_id
        self.size = size
        self.tl0_pic_idx = tl0_pic_idx  # §4.2 L: TL0PICIDX, None when absent
        self.tid = tid  # §4.2 T: the temporal layer index, None when absent

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
        tl0: int | None = None
        tid: int | None = None
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
                if n > pos:
                    tl0 = payload[pos]
                pos += 1
            if x & 0x30:  # T or K: |TID|Y| KEYIDX |
                if x & 0x20 and n > pos:
                    tid = payload[pos] >> 6
                pos += 1
            if pos > n:
                raise ValueError("vp8: truncated descriptor")
        return cls(start, pid, picture_id, pos, tl0, tid)


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


def frame_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) of the key frame this RTP payload starts, else None.

    RFC 6386 §9.1: after the 3-byte frame tag and the start code come two little-endian
    16-bit fields, 14 bits of size and 2 of scale each. They are among the first 10
    bytes a key frame keeps in the clear under E2EE (e2ee-worker/FORMAT.md).
    """
    if not is_keyframe(payload):
        return None
    d = Vp8Descriptor.parse(payload)
    header = payload[d.size : d.size + 10]
    if len(header) < 10:
        return None
    return (header[6] | header[7] << 8) & 0x3FFF, (header[8] | header[9] << 8) & 0x3FFF


def rewrite_descriptor(payload: bytes, picture_offset: int, tl0_offset: int) -> bytes:
    """``payload`` with its PictureID advanced by ``picture_offset`` (mod 2^15, or 2^7 for a
    7-bit one) and its TL0PICIDX by ``tl0_offset`` (mod 256), RFC 7741 §4.2; the rest is
    untouched. A payload without those fields, or malformed, comes back as it is.

    Layer switches need it (docs/SFU.md "Simulcast"): each simulcast layer numbers its
    pictures on its own, and the subscriber must see one sequence. ``sfu/_fanout.c``
    (``vp8_rewrite``) does the same to its copy of the packet.
    """
    n = len(payload)
    if n < 3 or not payload[0] & 0x80:
        return payload
    x = payload[1]
    out = bytearray(payload)
    pos = 2
    if x & 0x80:  # I
        if payload[2] & 0x80:  # M: 15 bits
            if n < 4:
                return payload
            pid = (((payload[2] & 0x7F) << 8 | payload[3]) + picture_offset) & 0x7FFF
            out[2], out[3] = 0x80 | pid >> 8, pid & 0xFF
            pos = 4
        else:
            out[2] = (payload[2] + picture_offset) & 0x7F
            pos = 3
    if x & 0x40 and pos < n:  # L
        out[pos] = (payload[pos] + tl0_offset) & 0xFF
    return bytes(out)


def build_descriptor(*, start: bool, picture_id: int, tl0_pic_idx: int | None = None,
                     tid: int | None = None, y: bool | None = None) -> bytes:
    """A descriptor with a 15-bit PictureID (RFC 7741 §4.2), optionally TL0PICIDX (L) and
    TID (T, with the layer sync bit Y: by default set for TID 0 as libwebrtc sets it, else
    ``y``); used by bots and tests."""
    if y is None:
        y = tid == 0
    x = 0x80 | (0x40 if tl0_pic_idx is not None else 0) | (0x20 if tid is not None else 0)
    out = bytes([0x80 | (0x10 if start else 0), x, 0x80 | ((picture_id >> 8) & 0x7F),
                 picture_id & 0xFF])
    if tl0_pic_idx is not None:
        out += bytes([tl0_pic_idx & 0xFF])
    if tid is not None:
        out += bytes([(tid & 3) << 6 | (0x20 if y else 0)])
    return out
