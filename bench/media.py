"""What the load generator sends: pre-shaped RTP that looks like E2EE media to an SFU.

Video packets carry a valid RFC 7741 §4.2 VP8 payload descriptor (15-bit PictureID); the
first packet of a frame then carries the clear VP8 payload header an E2EE sender leaves in
the clear (RFC 6386 §9.1 frame tag: 10 bytes for a key frame with the ``9d 01 2a`` start
code, 3 bytes for a delta frame, FORMAT.md). Everything after that is "opaque" to the SFU:
it starts with a 20-byte probe (magic, stream id, per-stream sequence number, send time in
CLOCK_MONOTONIC nanoseconds) followed by filler. Audio packets are an Opus TOC byte followed
by the same probe. The receiver finds the probe with ``bytes.find`` right after the RTP
header, so it does not care how an SFU rewrote SSRC, sequence numbers or extensions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sfu.vp8 import build_descriptor

MAGIC = b"\xb5\xe4\xc7\x01"
PROBE = struct.Struct("!4sIIQ")  # magic, stream id, stream sequence, send time (ns)
PROBE_AFTER = struct.Struct("!IIQ")  # the same, after the magic
RTP_FIXED = struct.Struct("!BBHII")  # RFC 3550 §5.1
MAX_PAYLOAD = 1100  # bytes of VP8 frame per packet, as browsers packetize (below ~1200 MTU)
OPUS_TOC = b"\x78"  # RFC 6716 §3.1: config 15 (SILK/CELT hybrid FB 20 ms), mono, code 0
FILLER = bytes(range(256)) * 8


def vp8_descriptor(start: bool, picture_id: int, tl0_pic_idx: int | None = None,
                   tid: int | None = None) -> bytes:
    """RFC 7741 §4.2: X=1, S, PID=0; I=1 with a 15-bit PictureID (M=1); for a temporally
    layered stream (simulcast L1T3) also L=1 with TL0PICIDX and T=1 with TID (Y=1 on
    TID 0, as libwebrtc sets it; KEYIDX 0): ``sfu.vp8.build_descriptor``."""
    return build_descriptor(start=start, picture_id=picture_id, tl0_pic_idx=tl0_pic_idx,
                            tid=tid)


def vp8_clear_header(key: bool, size: int, width: int = 640, height: int = 360) -> bytes:
    """RFC 6386 §9.1 frame tag (+ start code and 14-bit dimensions on key frames: an SFU
    that picks simulcast layers by height reads them there)."""
    tag = ((size & 0x7FFFF) << 5) | (1 << 4) | (0 if key else 1)  # size | show_frame | P
    head = struct.pack("<I", tag)[:3]
    if key:
        head += b"\x9d\x01\x2a" + struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return head


def rtp_header(pt: int, seq: int, ts: int, ssrc: int, marker: bool, ext: bytes) -> bytes:
    """RFC 3550 §5.1 fixed header (+ an RFC 8285 block already serialized)."""
    return RTP_FIXED.pack(0x90 if ext else 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                          ts & 0xFFFFFFFF, ssrc) + ext


@dataclass
class StreamSpec:
    """One outgoing stream: rates only (the RTP parameters come from negotiation).

    A simulcast layer (RFC 8853) has its ``rid`` (RFC 8851), its picture size (written
    into its key frames' clear header) and L1T3 VP8 descriptors (bench/gen.py)."""

    kind: str  # "audio" | "video"
    bitrate: int  # bit/s of media payload (video); audio: bytes per packet are fixed
    rate: float  # frames per second (video) or packets per second (audio)
    rid: str | None = None  # a simulcast layer's RTP stream id; None: no simulcast
    width: int = 640
    height: int = 360

    def frame_bytes(self) -> int:
        if self.kind == "audio":
            return 80  # ~32 kbit/s at 50 packets/s, a typical Opus voice bitrate
        return max(PROBE.size + 16, int(self.bitrate / 8 / self.rate))

    def packets_per_frame(self) -> int:
        if self.kind == "audio":
            return 1
        return -(-self.frame_bytes() // MAX_PAYLOAD)

    def packet_rate(self) -> float:
        return self.rate * self.packets_per_frame()


def frame_payloads(spec: StreamSpec, key: bool, picture_id: int, probe: list[bytes],
                   tl0_pic_idx: int | None = None, tid: int | None = None) -> list[bytes]:
    """RTP payloads of one frame; ``probe[i]`` is the 20-byte probe for packet ``i``;
    ``tl0_pic_idx`` and ``tid``: the temporal-layer fields of every packet's descriptor."""
    if spec.kind == "audio":
        return [OPUS_TOC + probe[0] + FILLER[: spec.frame_bytes() - 1 - PROBE.size]]
    size = spec.frame_bytes()
    n = spec.packets_per_frame()
    per = -(-size // n)
    out = []
    for i in range(n):
        chunk = min(per, size - i * per)
        head = vp8_descriptor(i == 0, picture_id, tl0_pic_idx, tid)
        if i == 0:
            head += vp8_clear_header(key, size, spec.width, spec.height)
        body = probe[i] + FILLER[: max(0, chunk - PROBE.size)]
        out.append(head + body)
    return out


def rtx_packet(original: bytes, payload_type: int, sequence: int, ssrc: int) -> bytes:
    """The RFC 4588 §4 retransmission of ``original`` (a plaintext RTP packet).

    SSRC-multiplexing (RFC 4588 §5.3): the RTX stream's own ``ssrc``, its own
    ``payload_type`` (the m-line's ``rtx`` with ``apt`` = the media type) and its own
    ``sequence`` counter; the timestamp is the original's (§4), and so are the marker bit
    and the header extensions (libwebrtc sends them so too: the SFU reads the MID from
    it). The payload is the original sequence number (OSN, 2 bytes) followed by the
    original payload (§4). The generator never pads, so there is no padding to move.
    """
    if len(original) < 12 or original[0] >> 6 != 2:
        raise ValueError("rtx: not an RTP packet")
    start = 12 + 4 * (original[0] & 0x0F)  # RFC 3550 §5.1: CSRC list
    if original[0] & 0x10:  # RFC 3550 §5.3.1: extension header, length in 32-bit words
        if len(original) < start + 4:
            raise ValueError("rtx: truncated extension")
        start += 4 + 4 * int.from_bytes(original[start + 2 : start + 4], "big")
    if len(original) < start or original[0] & 0x20:
        raise ValueError("rtx: truncated, or padded (the generator never pads)")
    head = bytearray(original[:start])
    head[1] = (original[1] & 0x80) | (payload_type & 0x7F)  # keep M, set the RTX PT
    head[2:4] = (sequence & 0xFFFF).to_bytes(2, "big")
    head[8:12] = (ssrc & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(head) + original[2:4] + original[start:]


def find_probe(packet: bytes, start: int = 12) -> tuple[int, int, int] | None:
    """(stream id, stream sequence, send ns) of a received RTP packet, or None."""
    i = packet.find(MAGIC, start, start + 96)
    if i < 0 or i + PROBE.size > len(packet):
        return None
    sid, seq, sent = PROBE_AFTER.unpack_from(packet, i + 4)
    return sid, seq, sent


def encoded_vp8(count: int, bitrate: int, fps: float, width: int = 640,
                height: int = 360) -> list[bytes]:
    """Real VP8 frames (libvpx via PyAV) of a moving pattern; frame 0 is the key frame.

    Only for systems that decode (aiortc MediaRelay): they cannot take opaque frames.
    """
    import fractions

    import av
    import numpy as np

    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate
    codec.framerate = fractions.Fraction(round(fps), 1)
    codec.time_base = fractions.Fraction(1, round(fps))
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                     "kf-max-dist": "100000"}
    xs = np.arange(width, dtype=np.int32)[None, :]
    ys = np.arange(height, dtype=np.int32)[:, None]
    frames = []
    for i in range(count):
        img = np.zeros((height, width, 3), dtype=np.uint8)
        img[:, :, 0] = (xs + 8 * i) % 256
        img[:, :, 1] = (ys * 2 + 4 * i) % 256
        img[:, :, 2] = ((xs + ys) // 4 + 2 * i) % 256
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        frames += [bytes(p) for p in codec.encode(frame)]
    frames += [bytes(p) for p in codec.encode(None)]
    return frames


def encoded_opus(count: int) -> list[bytes]:
    """Real 20 ms Opus packets (libopus via PyAV) of a 440 Hz tone."""
    import av
    import numpy as np

    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = 48000
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = 32000
    out = []
    for i in range(count):
        t = np.arange(960) + 960 * i
        pcm = (np.sin(2 * np.pi * 440 * t / 48000) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = i * 960
        out += [bytes(p) for p in codec.encode(frame)]
    return out


def packetize_vp8(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 payloads of a real VP8 frame, ≤ MAX_PAYLOAD bytes of frame each."""
    n = max(1, -(-len(frame) // MAX_PAYLOAD))
    per = -(-len(frame) // n)
    return [vp8_descriptor(i == 0, picture_id) + frame[i * per : (i + 1) * per]
            for i in range(n)]
