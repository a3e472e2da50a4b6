"""A tap inside the SFU: what it forwards to subscribers, and what can be read from it.

``SfuTap`` wraps ``RawPeer.send_rtp`` and the compiled fan-out's ``Sender.tap`` — the last
steps before SRTP protection — and records every RTP packet the SFU sends. ``analyse``
then does what a curious SFU operator could: reassemble the VP8 frames (RFC 7741 §4.2
descriptor, same RTP timestamp, marker on the last packet), parse the frame format's
trailer without any key (FORMAT.md, the SFrame header at the end), and hand every frame
to a real VP8 decoder (PyAV/libvpx) to see whether any picture comes out that looks like
one of the cameras.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from sealroom.sframe import EncryptedFrame, FrameRejected, KeyId, Kind
from sfu import peer as peer_module
from sfu._fanout import Sender
from sfu.peer import RawPeer
from sfu.rtp import RtpHeader
from sfu.vp8 import Vp8Descriptor
from tests.fakecam import block_diff


class SfuTap:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.packets: list[bytes] = []
        original = RawPeer.send_rtp
        packets = self.packets

        def send_rtp(peer: RawPeer, data: bytes) -> bool:
            packets.append(bytes(data))
            return original(peer, data)

        monkeypatch.setattr(RawPeer, "send_rtp", send_rtp)

        # The compiled fan-out (sfu/_fanout.c) sends without RawPeer.send_rtp: its Sender
        # hands each plaintext packet to ``tap`` just before SRTP protect.
        def tapped_sender() -> Sender:
            sender = Sender()
            sender.tap = packets.append
            return sender

        monkeypatch.setattr(peer_module, "Sender", tapped_sender)


@dataclass
class TapReport:
    video_frames: int = 0
    audio_frames: int = 0
    key_frames: int = 0
    senders: set[int] = field(default_factory=set)  # sender indices found in the trailers
    unparsable: int = 0  # frames without a valid frame-format trailer
    decoded: int = 0  # frames libvpx turned into a picture (key frames have a clear header)
    best_match: float = float("inf")  # smallest block difference of any picture to a camera
    reasons: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)


def picture(frame: Any, width: int = 16, height: int = 12) -> list[int]:
    """A decoded frame scaled down to width × height, flat RGB (as tiles.sample gives)."""
    rgb = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return [int(v) for v in np.asarray(rgb).reshape(-1)]


def vp8_pictures(frames: Sequence[bytes]) -> list[list[int]]:
    """Every picture libvpx produces from `frames` (errors are what ciphertext gives)."""
    codec = av.CodecContext.create("vp8", "r")
    out: list[list[int]] = []
    for data in frames:
        try:
            for decoded in codec.decode(av.Packet(data)):
                out.append(picture(decoded))
        except (av.error.FFmpegError, ValueError):
            continue
    return out


def _frames(packets: list[tuple[int, int, bool, bytes]]) -> list[bytes]:
    """Complete VP8 frames from (seq, ts, marker, payload) of one SSRC."""
    by_ts: dict[int, list[tuple[int, bool, bytes]]] = defaultdict(list)
    for seq, ts, marker, payload in packets:
        by_ts[ts].append((seq, marker, payload))
    frames = []
    for parts in by_ts.values():
        parts.sort()
        seqs = [s for s, _, _ in parts]
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))) or not parts[-1][1]:
            continue  # a wrapped or incomplete frame: skip it, there are plenty
        body = b""
        for i, (_, _, payload) in enumerate(parts):
            d = Vp8Descriptor.parse(payload)
            if i == 0 and not (d.start_of_partition and d.partition_id == 0):
                break
            body += payload[d.size :]
        else:
            frames.append(body)
    return frames


def analyse(
    packets: list[bytes], kind_of: Callable[[int], str | None], cameras: Sequence[list[int]]
) -> TapReport:
    report = TapReport()
    video: dict[int, list[tuple[int, int, bool, bytes]]] = defaultdict(list)
    for data in packets:
        h = RtpHeader.parse(data)
        payload = data[h.payload_offset : h.payload_end]
        kind = kind_of(h.ssrc)
        if kind == "video":
            video[h.ssrc].append((h.sequence_number, h.timestamp, h.marker, payload))
        elif kind == "audio" and payload:  # empty frames (Opus DTX) are not encrypted
            report.audio_frames += 1
            _trailer(report, "audio", payload)
    frames = [f for stream in video.values() for f in _frames(stream)]
    for frame in frames:
        report.video_frames += 1
        report.key_frames += (frame[0] & 1) == 0
        _trailer(report, "video", frame)
    _decode_into(report, frames, cameras)
    return report


def _trailer(report: TapReport, kind: Kind, frame: bytes) -> None:
    """Read the sender index from the frame-format trailer, with no key (FORMAT.md)."""
    try:
        report.senders.add(KeyId.parse(EncryptedFrame.parse(kind, frame).kid).sender)
    except FrameRejected as e:
        report.unparsable += 1
        report.reasons[e.reason] = report.reasons.get(e.reason, 0) + 1
        if len(report.samples) < 3:
            report.samples.append(f"{kind} {frame[:16].hex()}…{frame[-24:].hex()}")


def analyse_frames(frames: Sequence[bytes], cameras: Sequence[list[int]]) -> TapReport:
    """Only the decode part of `analyse`, for whole VP8 frames."""
    report = TapReport(video_frames=len(frames))
    _decode_into(report, frames, cameras)
    return report


def _decode_into(report: TapReport, frames: Sequence[bytes], cameras: Sequence[list[int]]) -> None:
    pictures = vp8_pictures(frames)
    report.decoded = len(pictures)
    for pic in pictures:
        for camera in cameras:
            report.best_match = min(report.best_match, block_diff(pic, camera))


def encode_vp8(rgb: list[int], width: int = 16, height: int = 12, count: int = 3) -> list[bytes]:
    """Plain (unencrypted) VP8 frames of a picture: the control that shows `analyse` would
    recognise a camera picture if the SFU could see one."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = 320, 240, "yuv420p"
    codec.time_base = Fraction(1, 10)
    image = np.asarray(rgb, dtype=np.uint8).reshape(height, width, 3)
    big = np.kron(image, np.ones((240 // height, 320 // width, 1), dtype=np.uint8))
    out: list[bytes] = []
    for i in range(count):
        frame = av.VideoFrame.from_ndarray(big, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out.extend(bytes(p) for p in codec.encode(frame))
    out.extend(bytes(p) for p in codec.encode(None))
    return out
