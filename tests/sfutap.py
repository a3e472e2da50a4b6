"""A tap inside the SFU: what it forwards to subscribers, and what can be read from it.

``SfuTap`` wraps ``RawPeer.send_rtp`` and the compiled fan-out's ``Sender.tap`` — the last
steps before SRTP protection — and records every RTP packet the SFU sends. ``analyse``
then does what a curious SFU operator could: reassemble the VP8 frames (RFC 7741 §4.2
descriptor, same RTP timestamp, marker on the last packet), parse the frame format's
trailer without any key (FORMAT.md, the SFrame header at the end), and hand every frame
to a real VP8 decoder (PyAV/libvpx) to see whether any picture comes out that looks like
one of the cameras.

The tap can also act as a **hostile SFU** (FORMAT.md §9: it can drop, delay and replay
frames, and rewrite everything outside them): ``record`` keeps what the SFU sends on one
subscriber SSRC; ``withhold`` stops forwarding a track to one subscriber (keeping that
subscriber's sequence numbers gapless, as the SFU does for silence) and keeps what the
publisher sent; ``inject`` sends recorded frames to the subscriber again through the
SFU's own send path (``RawPeer.send_rtp``: SRTP with the subscriber's context), as new
packets of the slot: fresh sequence numbers continuing the slot's, fresh advancing RTP
timestamps, a fresh abs-send-time, and the VP8 descriptor's PictureID/TL0PICIDX
(RFC 7741 §4.2) continuing what the subscriber last got — the encrypted frame bytes
themselves unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from e2ee.sframe import EncryptedFrame, FrameRejected, KeyId, Kind
from peers.fakecam import block_diff
from sfu import peer as peer_module
from sfu._fanout import Lane, Sender
from sfu.peer import RawPeer
from sfu.rtp import RtpHeader, build_extensions, build_packet
from sfu.track import PublishedTrack, Slot
from sfu.vp8 import Vp8Descriptor, is_keyframe

VIDEO_CLOCK = 90_000  # RFC 7741 §4.1: VP8's RTP clock rate


class SfuTap:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.packets: list[bytes] = []
        packets = self.packets
        # subscriber SSRC -> what the SFU sends on it, while recorded (``record``)
        recordings: dict[int, list[bytes]] = {}
        self._recordings = recordings
        # published track -> (lanes it is withheld from, what its publisher sent)
        self._withheld: dict[PublishedTrack, tuple[list[Lane], list[bytes]]] = {}
        withheld = self._withheld

        def keep(data: bytes) -> None:
            packets.append(data)
            if recordings:
                recording = recordings.get(int.from_bytes(data[8:12], "big"))
                if recording is not None:
                    recording.append(data)

        original = RawPeer.send_rtp

        def send_rtp(peer: RawPeer, data: bytes) -> bool:
            keep(bytes(data))
            return original(peer, data)

        monkeypatch.setattr(RawPeer, "send_rtp", send_rtp)

        # The compiled fan-out (sfu/_fanout.c) sends without RawPeer.send_rtp: its Sender
        # hands each plaintext packet to ``tap`` just before SRTP protect.
        def tapped_sender() -> Sender:
            sender = Sender()
            sender.tap = keep
            return sender

        monkeypatch.setattr(peer_module, "Sender", tapped_sender)

        on_rtp = PublishedTrack.on_rtp

        def withholding_on_rtp(track: PublishedTrack, h: RtpHeader, data: bytes) -> None:
            held = withheld.get(track)
            if held is None:
                on_rtp(track, h, data)
                return
            lanes, recording = held
            recording.append(bytes(data))
            for lane in lanes:  # as for silence: later packets shift down, no hole to NACK
                lane.skip(h.sequence_number)
            all_lanes, all_slots = track.lanes, track.slots
            kept = [i for i, lane in enumerate(all_lanes) if not any(lane is w for w in lanes)]
            track.lanes = [all_lanes[i] for i in kept]
            track.slots = [all_slots[i] for i in kept]
            try:
                on_rtp(track, h, data)  # everyone else still gets it
            finally:
                track.lanes, track.slots = all_lanes, all_slots

        monkeypatch.setattr(PublishedTrack, "on_rtp", withholding_on_rtp)

    # --- the hostile SFU ------------------------------------------------------------------

    def record(self, ssrc: int) -> list[bytes]:
        """Keep every packet the SFU sends on subscriber SSRC `ssrc` (plaintext RTP, as the
        subscriber will get it after SRTP) in the returned list, until ``stop_recording``."""
        return self._recordings.setdefault(ssrc, [])

    def stop_recording(self, ssrc: int) -> list[bytes]:
        return self._recordings.pop(ssrc, [])

    def withhold(self, slot: Slot) -> list[bytes]:
        """Stop forwarding `slot`'s track to its subscriber; the returned list gets every
        packet the publisher sends meanwhile (its own RTP, before any rewrite)."""
        track = slot.track
        assert track is not None, "the slot shows no track"
        lanes, recording = self._withheld.setdefault(track, ([], []))
        if not any(lane is slot.lane for lane in lanes):
            lanes.append(slot.lane)
        return recording

    def release(self, slot: Slot) -> list[bytes]:
        """Forward `slot`'s track again; returns what was withheld."""
        track = slot.track
        held = self._withheld.pop(track, None) if track is not None else None
        return held[1] if held is not None else []

    def last_sent(self, ssrc: int) -> bytes | None:
        """The newest packet the SFU sent on subscriber SSRC `ssrc`."""
        for data in reversed(self.packets):
            if int.from_bytes(data[8:12], "big") == ssrc:
                return data
        return None

    async def inject(self, slot: Slot, frames: Sequence[Sequence[bytes]],
                     pace: bool = True) -> Injection:
        """Send `frames` (each the RTP packets of one VP8 frame, recorded on either side of
        the SFU) to `slot`'s subscriber as if the SFU forwarded them now.

        Each packet is rebuilt with the slot's payload type, SSRC and header extensions
        (MID, a fresh abs-send-time); sequence numbers continue the slot's own without a
        gap; the RTP timestamp starts where the slot's clock is now (last timestamp sent +
        wall time since, as the SFU starts a run) and keeps the recording's spacing; the
        VP8 descriptor's PictureID continues, one per frame, from the last one the
        subscriber got on this slot, TL0PICIDX likewise (RFC 7741 §4.2). The payload after
        the descriptor — the encrypted frame — is sent unchanged. With `pace`, frames
        leave at the recording's pace. The packets go through ``RawPeer.send_rtp`` of the
        subscriber's sub PeerConnection: SRTP with its context, to its nominated pair.
        Afterwards the lane starts a new run, so packets the publisher sends later follow
        the injected ones. Raises if the SFU forwards on the slot meanwhile (the publisher
        must have stopped sending).
        """
        lane, params = slot.lane, slot.params
        assert params is not None and lane.pt >= 0, "the slot is not negotiated"
        peer = slot.owner.sub
        last = self.last_sent(params.ssrc)
        picture_id, tl0 = descriptor_ids(last) if last is not None else (None, None)
        next_pid = 0 if picture_id is None else picture_id + 1
        next_tl0 = 0 if tl0 is None else tl0 + 1
        now = time.monotonic()
        seq = lane.last_out_seq
        ts0 = (lane.last_out_ts + max(1, int((now - lane.last_out_time) * VIDEO_CLOCK)))
        first_ts = RtpHeader.parse(frames[0][0]).timestamp if frames else 0
        first_tl0 = descriptor_ids(frames[0][0])[1] if frames else None
        done = Injection()
        for index, frame in enumerate(frames):
            heads = [RtpHeader.parse(data) for data in frame]
            elapsed = (heads[0].timestamp - first_ts) & 0xFFFFFFFF
            if pace:
                await asyncio.sleep(max(0.0, now + elapsed / VIDEO_CLOCK - time.monotonic()))
            if lane.last_out_seq != seq:
                raise RuntimeError("the SFU forwarded on this slot during the injection")
            ts = (ts0 + elapsed) & 0xFFFFFFFF
            _, frame_tl0 = descriptor_ids(frame[0])
            tl0_out = None if frame_tl0 is None or first_tl0 is None else \
                next_tl0 + frame_tl0 - first_tl0
            sent = time.monotonic()
            ast = int(sent * (1 << 18)) & 0xFFFFFF  # 6.18 fixed-point seconds, 24 bits
            elements = [(i, v) for i, v in ((params.mid_id, params.mid.encode()),
                                            (params.abs_send_time_id, ast.to_bytes(3, "big")))
                        if i is not None]
            extensions = build_extensions(elements)
            for h, data in zip(heads, frame, strict=True):
                seq = (seq + 1) & 0xFFFF
                payload = rewrite_descriptor(data[h.payload_offset : h.payload_end],
                                             next_pid + index, tl0_out)
                packet = build_packet(payload_type=lane.pt, sequence_number=seq, timestamp=ts,
                                      ssrc=params.ssrc, marker=h.marker, extensions=extensions,
                                      payload=payload, csrcs=h.csrcs)
                if not peer.send_rtp(packet):
                    raise RuntimeError("the subscriber's transport is not up")
                lane.packets += 1
                lane.octets += len(payload)
                done.packets += 1
            lane.last_out_seq, lane.last_out_ts, lane.last_out_time = seq, ts, sent
            lane.started = False  # the publisher's next packet starts a run after these
            done.frames += 1
        return done


@dataclass
class Injection:
    frames: int = 0
    packets: int = 0


def descriptor_ids(data: bytes) -> tuple[int | None, int | None]:
    """(PictureID, TL0PICIDX) of an RTP packet's VP8 descriptor, None where absent."""
    h = RtpHeader.parse(data)
    payload = data[h.payload_offset : h.payload_end]
    try:
        d = Vp8Descriptor.parse(payload)
    except ValueError:  # no payload (padding only) or a truncated descriptor
        return None, None
    tl0 = None
    if payload[0] & 0x80 and payload[1] & 0x40:  # X, then L (RFC 7741 §4.2)
        tl0 = payload[d.size - (2 if payload[1] & 0x30 else 1)]
    return d.picture_id, tl0


def rewrite_descriptor(payload: bytes, picture_id: int, tl0: int | None) -> bytes:
    """`payload` with its VP8 descriptor's PictureID (7 or 15 bits, as it was) and
    TL0PICIDX (if present and `tl0` given) replaced (RFC 7741 §4.2); same length."""
    out = bytearray(payload)
    if not out[0] & 0x80:  # X=0: no extension octet, nothing to rewrite
        return bytes(out)
    x, pos = out[1], 2
    if x & 0x80:  # I: PictureID
        if out[pos] & 0x80:  # M=1: 15 bits
            out[pos] = 0x80 | ((picture_id >> 8) & 0x7F)
            out[pos + 1] = picture_id & 0xFF
            pos += 2
        else:
            out[pos] = picture_id & 0x7F
            pos += 1
    if x & 0x40:  # L: TL0PICIDX
        if tl0 is not None:
            out[pos] = tl0 & 0xFF
        pos += 1
    return bytes(out)


def whole_frames(packets: Sequence[bytes]) -> list[list[bytes]]:
    """The complete VP8 frames in `packets` (one SSRC, either side of the SFU), from the
    first key frame on, each as its RTP packets in sequence order. Duplicates are dropped;
    frames with a missing packet are left out."""
    by_ts: dict[int, dict[int, bytes]] = {}
    first_seq: int | None = None
    for data in packets:
        h = RtpHeader.parse(data)
        if h.payload_end <= h.payload_offset:
            continue  # padding only
        if first_seq is None:
            first_seq = h.sequence_number
        unwrapped = (h.sequence_number - first_seq) & 0xFFFF  # recordings are short
        by_ts.setdefault(h.timestamp, {}).setdefault(unwrapped, data)
    frames: list[tuple[int, list[bytes]]] = []
    for parts in by_ts.values():
        seqs = sorted(parts)
        ordered = [parts[s] for s in seqs]
        first = RtpHeader.parse(ordered[0])
        d = Vp8Descriptor.parse(ordered[0][first.payload_offset : first.payload_end])
        if seqs != list(range(seqs[0], seqs[0] + len(seqs))) or not d.start_of_partition \
                or d.partition_id != 0 or not RtpHeader.parse(ordered[-1]).marker:
            continue
        frames.append((seqs[0], ordered))
    frames.sort(key=lambda f: f[0])
    out = [f for _, f in frames]
    keys = [i for i, f in enumerate(out) if frame_is_key(f)]
    return out[keys[0] :] if keys else []


def frame_body(frame: Sequence[bytes]) -> bytes:
    """The VP8 frame (here: the encrypted frame) carried by one frame's RTP packets."""
    body = b""
    for data in frame:
        h = RtpHeader.parse(data)
        payload = data[h.payload_offset : h.payload_end]
        body += payload[Vp8Descriptor.parse(payload).size :]
    return body


def frame_is_key(frame: Sequence[bytes]) -> bool:
    h = RtpHeader.parse(frame[0])
    return is_keyframe(frame[0][h.payload_offset : h.payload_end])


def frame_ctr(kind: Kind, body: bytes) -> int:
    """The sender's frame counter, read from the frame format's trailer without a key."""
    return EncryptedFrame.parse(kind, body).ctr


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
