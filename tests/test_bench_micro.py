"""Micro benchmarks of the per-packet hot pieces (pytest-benchmark).

In the default suite they run once each as plain tests (``--benchmark-disable`` in
pyproject's addopts) and check the result of the measured call; to measure:

    .venv/bin/pytest --benchmark-enable tests/test_bench_micro.py
"""

from __future__ import annotations

import os
import struct
from typing import Any

from bench.media import MAGIC, PROBE, StreamSpec, find_probe, frame_payloads, rtp_header
from e2ee.sframe import FrameDecryptor, FrameEncryptor
from sfu.peer import Negotiated
from sfu.rtp import URI_AUDIO_LEVEL, URI_MID, RtpHeader, build_extensions, build_packet
from sfu.stats import Stats
from sfu.track import PublishedTrack, Slot
from sfu.vp8 import Vp8Descriptor, is_keyframe

SUB_SSRC = 0x11223344


class FakeSub:
    """RawPeer's sending side, without SRTP and socket: no ``Sender``, so every packet
    takes the general path (``Slot.forward``; tests/test_fanout.py measures the other)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.up = True
        self.sender = None

    def send_rtp(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    send_rtcp = send_rtp


class FakeOwner:
    """What Slot and PublishedTrack use of a Participant."""

    def __init__(self, pid: str = "p") -> None:
        self.pid = pid
        self.sub = FakeSub()
        self.rtcp_ssrc = 1

    def send_rtcp(self, data: bytes) -> bool:
        return True


def video_packet(seq: int, key: bool) -> bytes:
    spec = StreamSpec("video", 500_000, 30.0)
    probe = [PROBE.pack(MAGIC, 3, seq, 123456789)] * spec.packets_per_frame()
    payload = frame_payloads(spec, key, 77, probe)[0]
    ext = build_extensions([(1, b"0")])
    return rtp_header(96, seq, 90000, 0xCAFE, False, ext) + payload


def make_track(subscribers: int) -> tuple[PublishedTrack, list[FakeOwner]]:
    stats = Stats()
    owner = FakeOwner()
    track = PublishedTrack(owner, "video", "0", stats, 512, 1.0)  # type: ignore[arg-type]
    track.ssrc = 0xCAFE
    track.set_pub(Negotiated("video", "0", 0xCAFE, 0, {"vp8": 96}, None, {URI_MID: 1}))
    owners = []
    for i in range(subscribers):
        sub_owner = FakeOwner()
        slot = Slot(sub_owner, "video", None, stats)  # type: ignore[arg-type]
        slot.set_params(Negotiated("video", str(i), SUB_SSRC + i, 0, {"vp8": 100}, None,
                                   {URI_MID: 4, URI_AUDIO_LEVEL: 5}))
        slot.attach(track)
        owners.append(sub_owner)
    return track, owners


def forwarder(subscribers: int) -> tuple[Any, list[Any], bytes]:
    """A track with `subscribers` slots past its first key frame, and a function that
    forwards the next delta packet (fresh sequence number) through it."""
    track, owners = make_track(subscribers)
    track.on_rtp(RtpHeader.parse(video_packet(1, True)), video_packet(1, True))
    packet = video_packet(2, False)
    counter = iter(range(3, 10**9))

    def forward() -> None:
        seq = next(counter) & 0xFFFF
        data = packet[:2] + struct.pack("!H", seq) + packet[4:]
        track.on_rtp(RtpHeader.parse(data), data)

    return forward, owners, packet


def test_forward_one_packet_one_subscriber(benchmark: Any) -> None:
    """Publisher packet → parse → PublishedTrack.on_rtp → Slot.forward rewrite → send."""
    forward, owners, packet = forwarder(1)
    benchmark(forward)
    out = owners[0].sub.sent[-1]
    h = RtpHeader.parse(out)
    assert h.ssrc == SUB_SSRC and h.payload_type == 100
    assert h.extensions[4] == b"0"  # the subscriber's MID, RFC 8843 §15
    assert out[h.payload_offset :] == packet[RtpHeader.parse(packet).payload_offset :]


def test_forward_one_packet_ten_subscribers(benchmark: Any) -> None:
    forward, owners, _ = forwarder(10)
    benchmark(forward)
    assert all(o.sub.sent and RtpHeader.parse(o.sub.sent[-1]).ssrc == SUB_SSRC + i
               for i, o in enumerate(owners))


def test_vp8_descriptor_parse(benchmark: Any) -> None:
    packet = video_packet(1, True)
    payload = packet[RtpHeader.parse(packet).payload_offset :]

    def parse() -> tuple[Vp8Descriptor, bool]:
        return Vp8Descriptor.parse(payload), is_keyframe(payload)

    d, key = benchmark(parse)
    assert d.start_of_partition and d.picture_id == 77 and d.size == 4 and key


def test_rtp_rewrite(benchmark: Any) -> None:
    """RFC 3550 header parse + a rewritten header with a new RFC 8285 block."""
    packet = video_packet(9, False)

    def rewrite() -> bytes:
        h = RtpHeader.parse(packet)
        ext = build_extensions([(4, b"12"), (5, h.extensions.get(1, b"\x7f"))])
        return build_packet(payload_type=100, sequence_number=h.sequence_number + 1,
                            timestamp=h.timestamp + 3000, ssrc=SUB_SSRC, marker=h.marker,
                            extensions=ext, payload=packet[h.payload_offset : h.payload_end])

    out = benchmark(rewrite)
    h = RtpHeader.parse(out)
    assert (h.sequence_number, h.ssrc, h.extensions[4]) == (10, SUB_SSRC, b"12")


def test_probe_find(benchmark: Any) -> None:
    """The load generator's per-packet receive work (after SRTP unprotect)."""
    packet = video_packet(5, False)
    assert benchmark(find_probe, packet) == (3, 5, 123456789)


def test_frame_encrypt(benchmark: Any) -> None:
    enc = FrameEncryptor()
    enc.set_key(sender=7, key=bytes(range(32)))
    frame = b"\x31\x02\x00" + os.urandom(2080)  # a 500 kbit/s 30 fps delta frame
    out = benchmark(enc.encrypt, "video", frame)
    assert out[:3] == frame[:3] and len(out) > len(frame)


def test_frame_decrypt(benchmark: Any) -> None:
    enc = FrameEncryptor()
    enc.set_key(sender=7, key=bytes(range(32)))
    dec = FrameDecryptor()
    dec.set_key("p7", 7, 0, 0, bytes(range(32)))
    frame = b"\x31\x02\x00" + os.urandom(2080)
    frames = iter([enc.encrypt("video", frame) for _ in range(2000)])  # the replay window

    def decrypt() -> bytes:
        return dec.decrypt("video", "p7", next(frames))

    assert benchmark.pedantic(decrypt, rounds=1999, iterations=1) == frame
