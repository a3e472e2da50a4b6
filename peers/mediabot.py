"""A Python participant that publishes and receives raw RTP through the SFU, never decoding.

It sends what an E2EE browser sends, as far as the SFU can tell: VP8 packets with a
valid RFC 7741 descriptor whose frames start with the clear 10-byte (key) / 3-byte
(delta) VP8 header followed by random opaque bytes, and Opus-PT audio carrying the
RFC 6464 audio-level extension. It records every payload it sends and receives, so tests
can check byte-identical, exactly-once delivery, and counts PLIs, NACKs, RTX and SRs.

It speaks the SFU's signaling messages (docs/SFU.md), so the same bot runs in-process
(``sfu.join(room, pid, bot.on_message)`` + ``bot.attach(lambda m: sfu.handle(pid, m))``)
or over the WebSocket. Incoming messages are queued and handled in order by the bot's
own task, as they would be when read from a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import struct
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from peers.sfupeer import SfuPeer, Signal
from sfu import rtcp
from sfu.ice import IcePolicy
from sfu.peer import Negotiated, RawPeer, negotiated
from sfu.rtp import RtpHeader, build_extensions, build_packet
from sfu.simulcast import URI_REPAIRED_RID, URI_RID
from sfu.vp8 import build_descriptor

logger = logging.getLogger(__name__)

# Frame sources (e.g. peers/e2eebot.py): one encoded, encrypted frame per call, or None.
VideoSource = Callable[[bool], bytes | None]  # argument: a key frame is wanted
AudioSource = Callable[[], bytes | None]
MAX_VP8_CHUNK = 1100  # bytes of VP8 frame per RTP packet when a frame source is set
CODECS = {"audio": "opus", "video": "vp8"}
CLOCK = {"audio": 48000, "video": 90000}


def vp8_frame(key: bool, body: int, width: int = 640, height: int = 480) -> bytes:
    """A VP8 frame as E2EE leaves it: clear RFC 6386 §9.1 header, then opaque bytes."""
    size = body + (7 if key else 0)
    tag = (size << 5) | (1 << 4) | (0 if key else 1)  # first_part_size | show_frame | P
    header = struct.pack("<I", tag)[:3]
    if key:  # start code + 14-bit width/height, little-endian (RFC 6386 §9.1)
        header += b"\x9d\x01\x2a" + struct.pack("<HH", width, height)
    return header + os.urandom(body)


RESEND_KEEP = 512  # video packets a publishing bot keeps for the SFU's NACKs


@dataclass
class Received:
    """Packets received for one (publisher, kind), by unwrapped subscriber sequence number."""

    ssrc: int
    payloads: dict[int, bytes] = field(default_factory=dict)
    duplicates: int = 0
    recovered: int = 0  # filled by RTX
    highest: int | None = None  # unwrapped
    timestamps: dict[int, int] = field(default_factory=dict)
    first: int | None = None  # unwrapped: the first sequence number received

    def lost(self) -> int:
        """RFC 3550 §6.4.1 cumulative number of packets lost: expected since the first
        minus received (a repair counts as received, as libwebrtc counts it)."""
        if self.first is None or self.highest is None:
            return 0
        return max(0, self.highest - self.first + 1 - len(self.payloads))

    def unwrap(self, seq: int) -> int:
        if self.highest is None:
            return seq + (1 << 16)
        base = self.highest & ~0xFFFF
        cand = base | seq
        if cand - self.highest > 0x8000:
            cand -= 1 << 16
        elif self.highest - cand > 0x8000:
            cand += 1 << 16
        return cand

    def ordered(self) -> list[bytes]:
        return [self.payloads[k] for k in sorted(self.payloads)]

    def contiguous(self) -> bool:
        keys = sorted(self.payloads)
        return bool(keys) and keys[-1] - keys[0] + 1 == len(keys)


class MediaBot(SfuPeer):
    """One participant: a ``pub`` PC that sends raw RTP, a ``sub`` PC that records it."""

    def __init__(self, pid: str, signal: Signal | None = None, *, ice: IcePolicy | None = None,
                 audio: bool = True, video: bool = True, fps: int = 20,
                 packets_per_frame: int = 2, level: int = 100,
                 loss: Callable[[str, int], bool] | None = None, nack: bool = True,
                 uplink_loss: Callable[[int], bool] | None = None, answer_nacks: bool = True,
                 video_frames: VideoSource | None = None,
                 audio_frames: AudioSource | None = None) -> None:
        super().__init__(pid, signal)
        self.ice = ice or IcePolicy("127.0.0.1")
        self.kinds = [k for k, on in (("audio", audio), ("video", video)) if on]
        self.fps = fps
        self.packets_per_frame = packets_per_frame
        self.level = level  # RFC 6464 -dBov sent in every audio packet (127 = silence)
        self.loss = loss  # (kind, seq) -> True to drop an incoming packet (injected loss)
        self.nack = nack
        # (video seq) -> True to withhold a packet we publish, as a lossy uplink would;
        # the SFU's NACK for it is answered from ``_resend`` (RFC 4588) if answer_nacks
        self.uplink_loss = uplink_loss
        self.answer_nacks = answer_nacks
        self._resend: dict[int, bytes] = {}  # video seq -> packet, the last RESEND_KEEP
        self._rtx_seq = random.getrandbits(16)
        self.video_frames = video_frames  # None: random opaque frames (the default)
        self.audio_frames = audio_frames
        self.counters: Counter[str] = Counter()
        self.pub = RawPeer(self.ice, self._pub_rtp, self._pub_rtcp)
        self.sub = RawPeer(self.ice, self._sub_rtp, self._sub_rtcp)
        self.sent: dict[str, list[bytes]] = {k: [] for k in self.kinds}
        self.received: dict[tuple[str, str], Received] = {}
        self.tracks: dict[str, dict[str, str]] = {}  # sub MID -> {"participant", "kind"}
        self.speakers: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.sender_reports: dict[int, list[rtcp.SenderReport]] = defaultdict(list)
        self.remb: list[int] = []
        self._pub_params: dict[str, Negotiated] = {}
        self._sub_params: dict[str, Negotiated] = {}  # by sub MID
        self._sub_ssrc: dict[int, str] = {}  # media SSRC announced in the sub offer -> MID
        self._sub_rtx: dict[int, str] = {}  # RTX SSRC (a=ssrc-group:FID) -> MID
        self._mid_ext_ids: set[int] = set()
        self._media: asyncio.Future[None] | None = None
        self.offer_sdp = ""  # the pub offer as sent (munge_offer)
        self._key_wanted = True
        self._seq = {k: random.getrandbits(16) for k in self.kinds}
        self._ts = {k: random.getrandbits(32) for k in self.kinds}
        self._packets = dict.fromkeys(self.kinds, 0)
        self._octets = dict.fromkeys(self.kinds, 0)
        self._picture_id = random.getrandbits(15)
        self.sub_offers = 0
        self.closed = False
        # a REMB (bits/s) to send with every RR on the sub PC, as a browser's receive-side
        # estimator does (None: no REMB)
        self.send_remb: int | None = None
        # more fields of the first pub offer's message (e.g. {"screen": "1"}: its video is a
        # screen share, docs/SFU.md "Screen sharing")
        self.offer_fields: dict[str, Any] = {}

    # --- signaling ----------------------------------------------------------------------

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "sfu-answer" and msg.get("pc") == "pub":
            await self.pub.pc.setRemoteDescription(
                RTCSessionDescription(sdp=msg["sdp"], type="answer"))
            self.pub.adopt()
            transceivers: list[Any] = self.pub.pc.getTransceivers()
            for t in transceivers:
                self._pub_params[t.kind] = negotiated(t)
        elif kind == "sfu-offer" and msg.get("pc") == "sub":
            await self._on_sub_offer(msg)
        elif kind == "speaker":
            self.speakers.append(msg)
        elif kind == "sfu-error":
            self.errors.append(msg)

    async def publish(self) -> None:
        """Offer sendonly audio+video on the pub PC; media starts once it connects."""
        pc = self.pub.pc
        for kind in self.kinds:
            t = pc.addTransceiver(kind, direction="sendonly")
            caps = RTCRtpSender.getCapabilities(kind).codecs
            t.setCodecPreferences([c for c in caps if c.mimeType.lower() in
                                   (f"{kind}/{CODECS[kind]}", f"{kind}/rtx")])
        self.pub.adopt()
        await pc.setLocalDescription(await pc.createOffer())
        self.pub.adopt()
        self.offer_sdp = self.munge_offer(pc.localDescription.sdp)
        await self._emit({"type": "sfu-offer", "pc": "pub", "sdp": self.offer_sdp,
                          **self.offer_fields})
        self._media = asyncio.ensure_future(self._send_media())

    async def reoffer(self, **fields: Any) -> None:
        """Offer the pub PC again as it is now (e.g. a transceiver made inactive), with
        ``fields`` in the message (e.g. ``screen``); the SFU's answer is applied as any."""
        pc = self.pub.pc
        await pc.setLocalDescription(await pc.createOffer())
        self.pub.adopt()
        self.offer_sdp = self.munge_offer(pc.localDescription.sdp)
        await self._emit({"type": "sfu-offer", "pc": "pub", "sdp": self.offer_sdp, **fields})

    def munge_offer(self, sdp: str) -> str:
        """The pub offer as sent (a subclass edits aiortc's offer here)."""
        return sdp

    async def _on_sub_offer(self, msg: dict[str, Any]) -> None:
        pc = self.sub.pc
        self.sub_offers += 1
        self.tracks = {t["mid"]: t for t in msg.get("tracks", [])}
        parsed = SessionDescription.parse(msg["sdp"])
        await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
        self.sub.adopt()
        await pc.setLocalDescription(await pc.createAnswer())
        self.sub.adopt()
        self._sub_ssrc.clear()
        self._sub_rtx.clear()
        for media in parsed.media:
            rtx = {int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID"}
            for s in media.ssrc:
                (self._sub_rtx if s.ssrc in rtx else self._sub_ssrc)[s.ssrc] = media.rtp.muxId
        transceivers: list[Any] = pc.getTransceivers()
        for t in transceivers:
            n = negotiated(t)
            self._sub_params[n.mid] = n
            if n.mid_id is not None:
                self._mid_ext_ids.add(n.mid_id)
        await self._emit({"type": "sfu-answer", "pc": "sub", "sdp": pc.localDescription.sdp})

    # --- sending --------------------------------------------------------------------------

    async def _send_media(self) -> None:
        """20 ms audio packets and ``fps`` video frames, bounded by ``close``."""
        start = time.monotonic()
        tick = 0
        next_video = 0.0
        next_report = 1.0
        while not self.closed:
            now = time.monotonic() - start
            if self.pub.up and self._pub_params:
                if "audio" in self.kinds:
                    await self._send_audio()
                if "video" in self.kinds and now >= next_video:
                    next_video = now + 1.0 / self.fps
                    await self._send_video()
                if now >= next_report:
                    next_report = now + 1.0
                    await self._send_reports()
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.02 - time.monotonic()))

    def _packet(self, kind: str, payload: bytes, marker: bool, ts: int) -> bytes | None:
        p = self._pub_params.get(kind)
        if p is None or CODECS[kind] not in p.payload_types:
            return None
        elements: list[tuple[int, bytes]] = []
        if p.mid_id is not None:
            elements.append((p.mid_id, p.mid.encode()))
        if kind == "audio" and p.audio_level_id is not None:
            elements.append((p.audio_level_id, bytes([0x80 | (self.level & 0x7F)])))  # RFC 6464
        seq = self._seq[kind] = (self._seq[kind] + 1) & 0xFFFF
        self._packets[kind] += 1
        self._octets[kind] += len(payload)
        return build_packet(payload_type=p.payload_types[CODECS[kind]], sequence_number=seq,
                            timestamp=ts, ssrc=p.ssrc, marker=marker,
                            extensions=build_extensions(elements), payload=payload)

    async def _send_audio(self) -> None:
        self._ts["audio"] = (self._ts["audio"] + 960) & 0xFFFFFFFF
        if self.audio_frames is None:
            payload = b"\x78" + os.urandom(random.randint(40, 80))
        else:
            source = self.audio_frames()
            if not source:
                return  # nothing to send this 20 ms (encoder delay, DTX)
            payload = source
        packet = self._packet("audio", payload, False, self._ts["audio"])
        if packet is not None and await self.pub.send(packet):
            self.sent["audio"].append(payload)

    async def _send_video(self) -> None:
        key, self._key_wanted = self._key_wanted, False
        self._ts["video"] = (self._ts["video"] + 90000 // self.fps) & 0xFFFFFFFF
        if self.video_frames is None:
            frame = vp8_frame(key, random.randint(600, 1800))
            n = self.packets_per_frame
        else:
            source = self.video_frames(key)
            if not source:
                self._key_wanted = self._key_wanted or key
                return
            wanted, key = key, source[0] & 0x01 == 0  # RFC 6386 §9.1: P bit clear = key frame
            self._key_wanted = self._key_wanted or (wanted and not key)
            frame = source
            n = -(-len(frame) // MAX_VP8_CHUNK)  # RFC 7741 §4.4: one frame over n packets
        self._picture_id = (self._picture_id + 1) & 0x7FFF
        step = -(-len(frame) // n)
        for i in range(n):
            chunk = frame[i * step : (i + 1) * step]
            payload = build_descriptor(start=i == 0, picture_id=self._picture_id) + chunk
            packet = self._packet("video", payload, i == n - 1, self._ts["video"])
            if packet is None:
                continue
            seq = self._seq["video"]
            self._resend[seq] = packet
            self._resend.pop((seq - RESEND_KEEP) & 0xFFFF, None)
            if self.uplink_loss is not None and self.uplink_loss(seq):
                self.counters["uplink_withheld"] += 1
                self.sent["video"].append(payload)  # sent, and lost on the way
            elif await self.pub.send(packet):
                self.sent["video"].append(payload)
        self.counters["keyframes_sent" if key else "deltaframes_sent"] += 1

    async def _send_reports(self) -> None:
        """SR per published stream (pub PC), RR for what we receive (sub PC): RFC 3550 §6.4."""
        ntp = rtcp.ntp_now(time.time())
        data = b""
        for kind, p in self._pub_params.items():
            data += bytes(rtcp.SenderReport(p.ssrc, ntp, self._ts[kind], self._packets[kind],
                                            self._octets[kind]))
        if data:
            await self.pub.send(data)
        blocks = [rtcp.ReportBlock(r.ssrc, cumulative_lost=r.lost(),
                                   highest_sequence=(r.highest or 0) & 0xFFFFFFFF)
                  for r in self.received.values()]
        if self.sub.up:
            report = bytes(rtcp.ReceiverReport(1, blocks[:31]))
            if self.send_remb is not None:
                report += bytes(rtcp.Remb(1, self.send_remb, [r.ssrc for r in
                                                             self.received.values()]))
            await self.sub.send(report)

    # --- receiving ------------------------------------------------------------------------

    async def _pub_rtcp(self, data: bytes) -> None:
        for p in rtcp.parse_compound(data):
            if isinstance(p, rtcp.Pli):
                self.counters["pli_received"] += 1
                self._key_wanted = True
            elif isinstance(p, rtcp.Fir):
                self.counters["fir_received"] += 1
                self._key_wanted = True
            elif isinstance(p, rtcp.Remb):
                self.remb.append(p.bitrate)
            elif isinstance(p, rtcp.ReceiverReport):
                self.counters["rr_received"] += 1
            elif isinstance(p, rtcp.Nack):
                self.counters["nacks_received"] += 1
                self.counters["nacked"] += len(p.lost)
                if self.answer_nacks:
                    await self._retransmit(p.lost)

    async def _retransmit(self, lost: list[int]) -> None:
        """Answer the SFU's NACK (RFC 4585 §6.2.1): RTX if negotiated (RFC 4588 §4: the
        RTX SSRC and PT, our own RTX sequence, the original sequence number first in the
        payload), else the original packet again."""
        p = self._pub_params.get("video")
        for seq in lost[:64]:
            packet = self._resend.get(seq)
            if packet is None or p is None:
                self.counters["nack_unanswered"] += 1
                continue
            if p.rtx_payload_type is not None:
                h = RtpHeader.parse(packet)
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
                packet = build_packet(
                    payload_type=p.rtx_payload_type, sequence_number=self._rtx_seq,
                    timestamp=h.timestamp, ssrc=p.rtx_ssrc, marker=h.marker,
                    extensions=packet[12 : h.payload_offset],
                    payload=struct.pack("!H", seq) + packet[h.payload_offset : h.payload_end])
            if await self.pub.send(packet):
                self.counters["retransmitted"] += 1

    async def _pub_rtp(self, data: bytes) -> None:
        self.counters["unexpected_rtp_on_pub"] += 1

    async def _sub_rtcp(self, data: bytes) -> None:
        for p in rtcp.parse_compound(data):
            if isinstance(p, rtcp.SenderReport):
                self.sender_reports[p.ssrc].append(p)

    async def _sub_rtp(self, data: bytes) -> None:
        h = RtpHeader.parse(data)
        mid = None
        for ext_id in self._mid_ext_ids:  # route by MID first, as Chromium does
            if ext_id in h.extensions:
                mid = h.extensions[ext_id].decode()
                break
        info = self.tracks.get(mid) if mid is not None else None
        params = self._sub_params.get(mid) if mid is not None else None
        if info is None or params is None:
            self.counters["unknown_mid"] += 1
            return
        kind = info["kind"]
        payload = data[h.payload_offset : h.payload_end]
        rtx = h.payload_type == params.rtx_payload_type and self._sub_rtx.get(h.ssrc) == mid
        if rtx:
            if len(payload) < 2:
                self.counters["bad_rtx"] += 1
                return
            seq = struct.unpack("!H", payload[:2])[0]  # RFC 4588 §4: OSN
            payload = payload[2:]
            self.counters["rtx_received"] += 1
        else:
            seq = h.sequence_number
            if self._sub_ssrc.get(h.ssrc) != mid:
                self.counters["ssrc_mismatch"] += 1
                return
            if h.payload_type != params.payload_types.get(CODECS[kind]):
                self.counters["pt_mismatch"] += 1
                return
            if self.loss is not None and self.loss(kind, seq):
                self.counters["injected_loss"] += 1
                return
        key = (info["participant"], kind)
        r = self.received.get(key)
        if r is None or (not rtx and r.ssrc != h.ssrc):
            r = self.received[key] = Received(h.ssrc)
        n = r.unwrap(seq)
        if n in r.payloads:
            r.duplicates += 1
            return
        r.payloads[n] = payload
        r.timestamps[n] = h.timestamp
        if rtx:
            r.recovered += 1
            return
        if r.highest is not None and n > r.highest + 1 and self.nack:
            lost = [(s & 0xFFFF) for s in range(r.highest + 1, min(n, r.highest + 65))]
            self.counters["nacks_sent"] += 1
            await self.sub.send(bytes(rtcp.Nack(1, r.ssrc, lost)))
        if r.highest is None or n > r.highest:
            r.highest = n
        if r.first is None or n < r.first:
            r.first = n

    # --- helpers for tests and the benchmark ------------------------------------------------

    def ssrc_of(self, participant: str, kind: str) -> int | None:
        """The SSRC the SFU announced to us for ``participant``'s ``kind``."""
        for mid, t in self.tracks.items():
            if t["participant"] == participant and t["kind"] == kind:
                return next((s for s, m in self._sub_ssrc.items() if m == mid), None)
        return None

    def want_key_frame(self) -> None:
        """Make the next video frame a key frame (as a PLI from the SFU would)."""
        self._key_wanted = True

    async def request_keyframe(self, participant: str) -> bool:
        """Send a PLI (RFC 4585 §6.3.1) for ``participant``'s video, as a browser would."""
        ssrc = self.ssrc_of(participant, "video")
        if ssrc is None:
            return False
        self.counters["pli_sent"] += 1
        return await self.sub.send(bytes(rtcp.Pli(1, ssrc)))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` every 50 ms until true or ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return predicate()

    def stream(self, participant: str, kind: str) -> Received | None:
        return self.received.get((participant, kind))

    async def stop_media(self) -> None:
        """Stop sending (the PCs stay up)."""
        if self._media is not None:
            self._media.cancel()
            await asyncio.gather(self._media, return_exceptions=True)

    async def close(self, abrupt: bool = False) -> None:
        """Stop. ``abrupt``: like a crash, the SFU hears nothing more (no DTLS close_notify)."""
        self.closed = True
        if self._media is not None:
            self._media.cancel()
        await self._stop_work(2.0)
        for peer in (self.pub, self.sub):
            if abrupt:  # the network vanishes: nothing more leaves our sockets
                transceivers: list[Any] = peer.pc.getTransceivers()
                for t in transceivers:
                    conn = t.receiver.transport.transport._connection
                    for proto in list(conn._protocols):
                        proto.transport.sendto = _drop
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), 5.0)
        if self._media is not None:
            await asyncio.gather(self._media, return_exceptions=True)


def _drop(*args: Any, **kwargs: Any) -> None:
    """A datagram sent into the void."""


# --- simulcast ----------------------------------------------------------------------------

RID_EXT_ID = 12  # the ids our simulcast offer gives the RID extensions (aiortc uses 1..3)
REPAIRED_RID_EXT_ID = 13
RID_PACKETS = 20  # packets of each SSRC that carry MID and RID, as Chromium (~0.5 s)
TEMPORAL = (0, 2, 1, 2)  # L1T3: the TID of each frame in a cycle of four (RFC 7741 §4.2)
# ... and the frames of each cycle of eight with the layer sync bit Y on a TID above 0:
# libwebrtc's DefaultTemporalLayers lets the TID 2 frame after a TID 0 one and the TID 1
# frame after it reference only TID 0, every 8 frames ("Layer sync ... happens every 8
# frames"); the TID 0 frames carry Y too (build_descriptor)
SYNC_FRAMES = (1, 2)


@dataclass
class Layer:
    """One simulcast encoding of a ``SimulcastBot``."""

    rid: str
    width: int
    height: int
    body: int  # bytes of opaque frame per frame
    ssrc: int = field(default_factory=lambda: random.getrandbits(32) or 1)
    rtx_ssrc: int = field(default_factory=lambda: random.getrandbits(32) or 1)
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    rtx_seq: int = field(default_factory=lambda: random.getrandbits(16))
    ts: int = field(default_factory=lambda: random.getrandbits(32))
    active: bool = True  # False: not sent (as encodings[i].active = false)
    key_wanted: bool = True
    frames: int = 0
    tl0: int = field(default_factory=lambda: random.getrandbits(8))
    packets: int = 0
    octets: int = 0
    plis: int = 0
    sent: list[bytes] = field(default_factory=list)  # every payload, descriptor included
    resend: dict[int, bytes] = field(default_factory=dict)


class SimulcastBot(MediaBot):
    """A publisher of VP8 simulcast as Chromium sends it (docs/SFU.md "Simulcast").

    Its offer has ``a=rid:<id> send`` per layer, ``a=simulcast:send`` and the RID
    extensions, and no ``a=ssrc`` for video; each layer has its own SSRC and RTX SSRC,
    sequence, timestamps and L1T3 VP8 descriptors (15-bit PictureID from one shared
    start, TL0PICIDX, TID); MID and RID ride only on each SSRC's first ``RID_PACKETS``
    packets, repaired RID on every RTX packet. A PLI makes a key frame on the layer
    whose SSRC it names. ``probe_first`` sends a padding-only packet on the top layer's
    RTX SSRC, with only the MID, before any media (Chromium's first packet often is).
    """

    LAYERS = (("q", 320, 180, 250), ("h", 640, 360, 700), ("f", 1280, 720, 2000))

    def __init__(self, pid: str, signal: Signal | None = None, *, probe_first: bool = False,
                 layer_loss: Callable[[str, int], bool] | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("audio", False)
        super().__init__(pid, signal, **kwargs)
        self.layers = [Layer(rid, w, h, body) for rid, w, h, body in self.LAYERS]
        self.probe_first = probe_first
        # (rid, seq) -> True to withhold a packet we publish on that layer (a lossy uplink);
        # the SFU's NACK for it is answered on the layer's RTX SSRC
        self.layer_loss = layer_loss
        self.answer_sdp = ""  # the SFU's answer to offer_sdp
        self.layer_messages: list[dict[str, bool]] = []  # every sfu-layers, in order

    def layer(self, rid: str) -> Layer:
        return next(x for x in self.layers if x.rid == rid)

    def munge_offer(self, sdp: str) -> str:
        """aiortc's offer made simulcast (RFC 8853 §5.1, RFC 8851 §4), as Chromium's."""
        out: list[str] = []
        video = False
        for line in sdp.splitlines():
            if line.startswith("m="):
                if video:
                    out.extend(self._simulcast_lines())
                video = line.startswith("m=video")
            if video and line.startswith(("a=ssrc:", "a=ssrc-group:")):
                continue  # Chromium's simulcast offer has no a=ssrc lines
            out.append(line)
            if video and line.startswith("a=mid:"):
                out.append(f"a=extmap:{RID_EXT_ID} {URI_RID}")
                out.append(f"a=extmap:{REPAIRED_RID_EXT_ID} {URI_REPAIRED_RID}")
        if video:
            out.extend(self._simulcast_lines())
        return "\r\n".join(out) + "\r\n"

    def _simulcast_lines(self) -> list[str]:
        return [f"a=rid:{x.rid} send" for x in self.layers] + [
            "a=simulcast:send " + ";".join(x.rid for x in self.layers)]

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("type") == "sfu-answer" and msg.get("pc") == "pub":
            self.answer_sdp = msg["sdp"]
        elif msg.get("type") == "sfu-layers" and isinstance(msg.get("layers"), dict):
            self.set_layers(msg["layers"])
            return
        await super()._dispatch(msg)

    def set_layers(self, layers: dict[str, bool]) -> None:
        """Dynacast (docs/SFU.md "Dynacast"): send the layers ``layers`` names True, as
        a page sets ``encodings[i].active``; like Chromium, restarting any layer makes a
        key frame on every active layer."""
        self.layer_messages.append(dict(layers))
        restarted = False
        for x in self.layers:
            want = layers.get(x.rid)
            if isinstance(want, bool) and want != x.active:
                x.active = want
                restarted = restarted or want
        if restarted:
            for x in self.layers:
                x.key_wanted = True

    async def _send_video(self) -> None:
        p = self._pub_params.get("video")
        if p is None or "vp8" not in p.payload_types:
            return
        if self.probe_first and not self.counters["probes_sent"]:
            await self._send_probe(p)
        self._picture_id = (self._picture_id + 1) & 0x7FFF  # one picture, every layer
        for x in self.layers:
            if not x.active:
                continue
            key, x.key_wanted = x.key_wanted, False
            if key:
                x.frames = 0  # L1T3 restarts at a key frame
            tid = TEMPORAL[x.frames % len(TEMPORAL)]
            sync = tid == 0 or x.frames % 8 in SYNC_FRAMES
            if tid == 0:
                x.tl0 = (x.tl0 + 1) & 0xFF
            x.frames += 1
            x.ts = (x.ts + 90000 // self.fps) & 0xFFFFFFFF
            frame = vp8_frame(key, x.body + random.randint(0, x.body // 4), x.width, x.height)
            n = -(-len(frame) // MAX_VP8_CHUNK)
            step = -(-len(frame) // n)
            for i in range(n):
                payload = build_descriptor(start=i == 0, picture_id=self._picture_id,
                                           tl0_pic_idx=x.tl0, tid=tid, y=sync) + \
                    frame[i * step : (i + 1) * step]
                x.seq = (x.seq + 1) & 0xFFFF
                elements: list[tuple[int, bytes]] = []
                if x.packets < RID_PACKETS and p.mid_id is not None:
                    elements = [(p.mid_id, p.mid.encode()), (RID_EXT_ID, x.rid.encode())]
                packet = build_packet(payload_type=p.payload_types["vp8"], sequence_number=x.seq,
                                      timestamp=x.ts, ssrc=x.ssrc, marker=i == n - 1,
                                      extensions=build_extensions(elements), payload=payload)
                x.resend[x.seq] = packet
                x.resend.pop((x.seq - RESEND_KEEP) & 0xFFFF, None)
                x.packets += 1
                x.octets += len(payload)
                if self.layer_loss is not None and self.layer_loss(x.rid, x.seq):
                    self.counters["uplink_withheld"] += 1
                    x.sent.append(payload)  # sent, and lost on the way
                elif await self.pub.send(packet):
                    x.sent.append(payload)
            self.counters[f"keyframes_sent_{x.rid}" if key else "deltaframes_sent"] += 1

    async def _send_probe(self, p: Negotiated) -> None:
        """RFC 3550 §5.1 padding only (P set, last octet the count) on the top RTX SSRC."""
        if p.rtx_payload_type is None or p.mid_id is None:
            return
        top = self.layers[-1]
        top.rtx_seq = (top.rtx_seq + 1) & 0xFFFF
        ext = build_extensions([(p.mid_id, p.mid.encode())])
        packet = struct.pack("!BBHII", 0xB0, p.rtx_payload_type, top.rtx_seq, top.ts,
                             top.rtx_ssrc) + ext + bytes(199) + bytes([200])
        if await self.pub.send(packet):
            self.counters["probes_sent"] += 1

    async def _send_reports(self) -> None:
        ntp = rtcp.ntp_now(time.time())
        data = b"".join(bytes(rtcp.SenderReport(x.ssrc, ntp, x.ts, x.packets, x.octets))
                        for x in self.layers if x.packets)
        if data:
            await self.pub.send(data)
        blocks = [rtcp.ReportBlock(r.ssrc, cumulative_lost=r.lost(),
                                   highest_sequence=(r.highest or 0) & 0xFFFFFFFF)
                  for r in self.received.values()]
        if self.sub.up and blocks:
            await self.sub.send(bytes(rtcp.ReceiverReport(1, blocks[:31])))

    async def _pub_rtcp(self, data: bytes) -> None:
        for p in rtcp.parse_compound(data):
            if isinstance(p, rtcp.Pli):
                self.counters["pli_received"] += 1
                for x in self.layers:
                    if x.ssrc == p.media_ssrc:
                        x.key_wanted = True
                        x.plis += 1
            elif isinstance(p, rtcp.Remb):
                self.remb.append(p.bitrate)
            elif isinstance(p, rtcp.ReceiverReport):
                self.counters["rr_received"] += 1
            elif isinstance(p, rtcp.Nack):
                self.counters["nacks_received"] += 1
                await self._retransmit_layer(p.media_ssrc, p.lost)

    async def _retransmit_layer(self, ssrc: int, lost: list[int]) -> None:
        """RFC 4588 §4 RTX on the layer's RTX SSRC, repaired RID on every packet."""
        x = next((x for x in self.layers if x.ssrc == ssrc), None)
        p = self._pub_params.get("video")
        if x is None or p is None or p.rtx_payload_type is None:
            return
        for seq in lost[:64]:
            packet = x.resend.get(seq)
            if packet is None:
                self.counters["nack_unanswered"] += 1
                continue
            h = RtpHeader.parse(packet)
            x.rtx_seq = (x.rtx_seq + 1) & 0xFFFF
            elements = [(REPAIRED_RID_EXT_ID, x.rid.encode())]
            if p.mid_id is not None:
                elements.append((p.mid_id, p.mid.encode()))
            rtx = build_packet(payload_type=p.rtx_payload_type, sequence_number=x.rtx_seq,
                               timestamp=h.timestamp, ssrc=x.rtx_ssrc, marker=h.marker,
                               extensions=build_extensions(elements),
                               payload=struct.pack("!H", seq)
                               + packet[h.payload_offset : h.payload_end])
            if await self.pub.send(rtx):
                self.counters["retransmitted"] += 1
