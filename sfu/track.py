"""Published tracks (one publisher m-line) and slots (one subscriber m-line).

A ``PublishedTrack`` receives a publisher's packets; each ``Slot`` it is attached to
rewrites them for one subscriber: SSRC, payload type, sequence number, timestamp and
the MID header extension become the ones that subscriber's SDP announced (Chromium
routes by MID first), and the audio-level extension is kept with the subscriber's id.
Payload bytes are never touched: under E2EE they are ciphertext.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from array import array
from typing import TYPE_CHECKING

from . import rtcp
from .peer import Negotiated
from .rtp import ONE_BYTE_PROFILE, RtpHeader, build_extensions, build_packet, seq_newer
from .stats import Stats
from .vp8 import is_keyframe

if TYPE_CHECKING:
    from .participant import Participant

logger = logging.getLogger(__name__)

CLOCK = {"audio": 48000, "video": 90000}
CODEC = {"audio": "opus", "video": "vp8"}  # DESIGN.md: the only codecs negotiated
SILENCE = 127  # RFC 6464 §3: the lowest level, -127 dBov: digital silence
RTP_V2 = 0x80  # RFC 3550 §5.1: V=2 in the first octet
EXT_BIT = 0x10  # RFC 3550 §5.1: X
_FIXED = struct.Struct("!BBHII")
# RFC 8285 §4.2: "0xBEDE" + length in 32-bit words, for every length a block can have
_ONE_BYTE_HEAD = [struct.pack("!HH", ONE_BYTE_PROFILE, words) for words in range(64)]
_PAD = [b"", b"\x00", b"\x00\x00", b"\x00\x00\x00"]


class PublishedTrack:
    """One audio or video stream a participant sends to the SFU."""

    def __init__(self, owner: Participant, kind: str, mid: str, stats: Stats,
                 cache_size: int, pli_interval: float, drop_silence: bool = True) -> None:
        self.owner = owner
        self.kind = kind
        self.mid = mid  # the publisher's MID for this m-line
        self.ssrc: int | None = None  # learned from SDP a=ssrc or from the MID extension
        self.stats = stats
        self.slots: list[Slot] = []
        self.pub: Negotiated | None = None  # negotiated params of the publisher's m-line
        self.payload_type = -1  # the publisher's PT for the codec (-1: not negotiated yet)
        self._level_id = 0  # the publisher's RFC 6464 extension id (0: not negotiated)
        self._ast_id = 0  # the publisher's abs-send-time extension id (0: not negotiated)
        self.drop_silence = drop_silence
        # retransmission cache, indexed by seq % size (RFC 4588 needs the original payload)
        self._cache_size = cache_size
        # Only bytes are kept (re-parsed on a NACK): bytes are not tracked by the cyclic
        # GC, so 512 cached packets per track never age into the oldest generation, whose
        # full collections were pausing the forwarding loop for milliseconds (p99).
        self._cache: list[bytes] = [b""] * cache_size
        self._cache_seq = array("l", [-1]) * cache_size  # flat C longs, not int objects
        # key-frame request throttle: at most one PLI per pli_interval (RFC 4585 §3.5.2
        # leaves rate control to the sender of feedback; one per second is common practice)
        self.pli_interval = pli_interval
        self._last_pli = -1e9
        self._pli_timer: asyncio.TimerHandle | None = None
        self.keyframes = 0
        # reception statistics for receiver reports (RFC 3550 §6.4.1, App. A.3)
        self.received = 0
        self.octets = 0
        self._base_seq: int | None = None
        self._max_seq = 0
        self._cycles = 0
        self._expected_prior = 0
        self._received_prior = 0
        self.last_sr: tuple[int, float] | None = None  # (middle 32 bits of NTP, arrival)
        self.sr: rtcp.SenderReport | None = None
        self.levels: list[tuple[float, int]] = []  # (time, -dBov) from RFC 6464
        self.remb: dict[int, tuple[int, float]] = {}  # subscriber slot ssrc -> (bps, time)

    def set_pub(self, pub: Negotiated) -> None:
        """The publisher's negotiated m-line: which extension ids carry what."""
        self.pub = pub
        self.payload_type = pub.payload_types.get(CODEC[self.kind], -1)
        self._level_id = pub.audio_level_id or 0
        self._ast_id = pub.abs_send_time_id or 0

    # --- receive path -----------------------------------------------------------------

    def on_rtp(self, h: RtpHeader, data: bytes) -> None:
        """Forward one packet to every attached slot (hot path).

        Everything that is the same for all subscribers is done once here: the payload
        slice, the extension values kept, key-frame and silence detection, the clock.
        """
        self._count(h)
        seq = h.sequence_number
        self._cache[seq % self._cache_size] = data
        self._cache_seq[seq % self._cache_size] = seq
        exts = h.extensions
        level = exts.get(self._level_id) if self._level_id else None
        ast = exts.get(self._ast_id) if self._ast_id else None
        key = False
        start = h.payload_offset
        if self.kind == "video":
            # Only the first packet of a frame can start a key frame (RFC 7741 §4.3: S=1,
            # PID=0); the byte test spares the descriptor parse on all the others.
            if start < h.payload_end and data[start] & 0x17 == 0x10:
                key = is_keyframe(data[start : h.payload_end])
                if key:
                    self.keyframes += 1
        elif level:
            value = level[0] & 0x7F  # RFC 6464 §3: -dBov, 127 = digital silence
            self.levels.append((time.monotonic(), value))
            if value == SILENCE and self.drop_silence:
                # Nobody needs digital silence (a muted or silent microphone): drop it for
                # every subscriber, keeping their sequence numbers gapless (Slot.skip).
                for slot in self.slots:
                    slot.skip(h)
                self.stats.drop("silence")
                return
        slots = self.slots
        if not slots:
            return
        payload = data[start : h.payload_end]
        now = time.monotonic()
        for slot in slots:
            slot.forward(h, payload, level, ast, key, now)

    def _count(self, h: RtpHeader) -> None:
        """RFC 3550 App. A.1 sequence tracking (simplified: no probation)."""
        seq = h.sequence_number
        self.received += 1
        self.octets += h.payload_end - h.payload_offset
        if self._base_seq is None:
            self._base_seq = self._max_seq = seq
        elif seq_newer(seq, self._max_seq):
            if seq < self._max_seq:
                self._cycles += 1 << 16
            self._max_seq = seq

    def cached(self, seq: int) -> tuple[bytes, RtpHeader] | None:
        i = seq % self._cache_size
        if self._cache_seq[i] != seq:
            return None
        data = self._cache[i]
        return data, RtpHeader.parse(data)  # it parsed once already: it parses again

    def report_block(self) -> rtcp.ReportBlock | None:
        """RFC 3550 §6.4.1 / App. A.3 reception report for this source."""
        if self.ssrc is None or self._base_seq is None:
            return None
        extended_max = self._cycles + self._max_seq
        expected = extended_max - self._base_seq + 1
        lost = expected - self.received
        expected_interval = expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else \
            (lost_interval << 8) // expected_interval
        lsr, dlsr = 0, 0
        if self.last_sr is not None:
            lsr = self.last_sr[0]
            dlsr = int((time.monotonic() - self.last_sr[1]) * 65536)  # units of 1/65536 s
        return rtcp.ReportBlock(self.ssrc, min(fraction, 255), lost, extended_max & 0xFFFFFFFF,
                                0, lsr, dlsr)

    def on_sender_report(self, sr: rtcp.SenderReport) -> list[tuple[Slot, bytes]]:
        """Remember the SR for our RR's LSR and translate it for every slot (RFC 3550 §7.2)."""
        self.last_sr = ((sr.ntp >> 16) & 0xFFFFFFFF, time.monotonic())
        self.sr = sr
        out = []
        for slot in self.slots:
            translated = slot.translate_sr(sr)
            if translated is not None:
                out.append((slot, translated))
        return out

    def mean_level(self, now: float, window: float) -> int:
        """Mean -dBov over the window; 127 (silence) when nothing arrived."""
        self.levels = [(t, v) for t, v in self.levels[-200:] if now - t <= window]
        if not self.levels:
            return 127
        return sum(v for _, v in self.levels) // len(self.levels)

    # --- key frames -------------------------------------------------------------------

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a key frame, at most once per ``pli_interval``.

        A request inside the interval is not lost: one PLI is sent when it ends.
        """
        if self.kind != "video":
            return
        self.stats.add("keyframe_requests")
        self.stats.add("keyframe_requests_" + reason)
        now = time.monotonic()
        wait = self._last_pli + self.pli_interval - now
        if wait <= 0:
            self._send_pli()
        elif self._pli_timer is None:
            self.stats.add("plis_deferred")
            self._pli_timer = asyncio.get_running_loop().call_later(wait, self._send_pli)
        else:
            self.stats.add("plis_throttled")

    def _send_pli(self) -> None:
        self._pli_timer = None
        if self.ssrc is None:
            return
        self._last_pli = time.monotonic()
        self.stats.add("plis_sent")
        self.owner.send_rtcp(bytes(rtcp.Pli(self.owner.rtcp_ssrc, self.ssrc)))

    def close(self) -> None:
        if self._pli_timer is not None:
            self._pli_timer.cancel()
            self._pli_timer = None
        for slot in list(self.slots):
            slot.detach()
        self._cache = [b""] * self._cache_size
        self._cache_seq = array("l", [-1]) * self._cache_size


class Slot:
    """One m-line of a subscriber's ``sub`` PeerConnection, showing one published track."""

    def __init__(self, owner: Participant, kind: str, transceiver: object,
                 stats: Stats) -> None:
        self.owner = owner
        self.kind = kind
        self.transceiver = transceiver
        self.stats = stats
        self._sub = owner.sub  # the RawPeer this slot sends through
        self.params: Negotiated | None = None  # set once the subscriber's answer is applied
        self.track: PublishedTrack | None = None
        self.publisher: str | None = None  # the one participant this MID ever shows
        self.active = True  # False when last-N leaves this publisher out
        self.waiting_key = False
        self._last_key_request = -1e9
        # precomputed rewrite state (set_params): what every packet of this slot gets
        self._pt = -1  # our payload type for the codec (-1: not negotiated)
        self._ssrc = 0
        self._mid_elem = b""  # the whole RFC 8285 one-byte MID element, header included
        self._level_head = b""  # one-byte element header for a 1-byte audio level
        self._ast_head = b""  # one-byte element header for a 3-byte abs-send-time
        self._bare_ext = b""  # our extension block when no level/abs-send-time is kept
        self._one_byte = False  # every element fits RFC 8285 §4.2's one-byte form
        # rewrite state: continuous across publishers and pauses (DESIGN.md "Media plane")
        self._started = False  # first packet of the current run not seen yet
        self._seq_offset = 0
        self._ts_offset = 0
        self._last_in_seq = 0
        self._resume_seq = 0
        self._last_out_seq = random.getrandbits(16)
        self._last_out_ts = random.getrandbits(32)
        self._last_out_time = time.monotonic()
        self._rtx_seq = random.getrandbits(16)
        # out seq % 512 -> (out seq << 16 | in seq), for NACK. A C array, not a list: 512
        # int objects of 32 bytes per slot were 0.6 MB per participant at N=20 (O(N²)).
        self._sent_map = array("q", [-1]) * 512
        self.packets = 0
        self.octets = 0

    @property
    def ssrc(self) -> int:
        return self.params.ssrc if self.params else 0

    def set_params(self, params: Negotiated) -> None:
        """The subscriber's answer is in: precompute everything per-packet rewriting needs."""
        self.params = params
        self._pt = params.payload_types.get(CODEC[self.kind], -1)
        self._ssrc = params.ssrc
        mid = params.mid.encode()
        ids = [i for i in (params.mid_id, params.audio_level_id, params.abs_send_time_id)
               if i is not None]
        self._one_byte = all(1 <= i <= 14 for i in ids) and 1 <= len(mid) <= 16
        if self._one_byte:
            self._mid_elem = (bytes([(params.mid_id << 4) | (len(mid) - 1)]) + mid
                              if params.mid_id is not None else b"")
            self._level_head = (bytes([params.audio_level_id << 4])
                                if params.audio_level_id is not None else b"")
            self._ast_head = (bytes([(params.abs_send_time_id << 4) | 2])
                              if params.abs_send_time_id is not None else b"")
        self._bare_ext = self._extensions(None, None)  # most video packets: MID only

    def attach(self, track: PublishedTrack) -> None:
        """Show ``track`` in this slot from the next key frame on (video)."""
        self.detach()
        self.track = track
        self.publisher = track.owner.pid
        track.slots.append(self)
        self._started = False
        self.waiting_key = self.kind == "video"
        self._last_key_request = -1e9

    def detach(self) -> None:
        if self.track is not None and self in self.track.slots:
            self.track.slots.remove(self)
        self.track = None
        self._started = False

    def set_active(self, active: bool) -> None:
        """Pause or resume (last-N); a resumed video slot waits for a key frame."""
        if active == self.active:
            return
        self.active = active
        self._started = False
        if active and self.kind == "video":
            self.waiting_key = True
            self._last_key_request = -1e9

    @property
    def ready(self) -> bool:
        return self.params is not None and self._sub.up

    def forward(self, h: RtpHeader, payload: bytes, level: bytes | None, ast: bytes | None,
                key: bool, now: float) -> None:
        """Rewrite and send one packet, or skip it keeping sequence numbers continuous.

        Hot path, once per packet per subscriber: integer arithmetic, one header built
        from precomputed pieces, one SRTP protect and one ``sendto`` (RawPeer.send_rtp).
        """
        if not self.active or self._pt < 0 or not self._sub.up:
            self.skip(h)
            self.stats.drop(self._not_sending())
            return
        if self.waiting_key:
            if not key:
                self.skip(h)
                self.stats.drop("await_keyframe")
                track = self.track
                if track is not None and now - self._last_key_request >= track.pli_interval:
                    self._last_key_request = now
                    track.request_keyframe("subscriber_added")
                return
            self.waiting_key = False
        seq = h.sequence_number
        if not self._started:
            # Start a run: next out seq follows the last one sent, timestamps advance by
            # the wall time elapsed, so the subscriber sees one continuous stream.
            out_ts = self._last_out_ts + max(1, int((now - self._last_out_time)
                                                    * CLOCK[self.kind]))
            self._seq_offset = (seq - self._last_out_seq - 1) & 0xFFFF
            self._ts_offset = (out_ts - h.timestamp) & 0xFFFFFFFF
            self._resume_seq = seq
            self._last_in_seq = seq
            self._started = True
        elif 0 < ((seq - self._last_in_seq) & 0xFFFF) < 0x8000:  # seq_newer, inlined
            self._last_in_seq = seq
        elif seq != self._resume_seq and ((seq - self._resume_seq) & 0xFFFF) >= 0x8000:
            self.stats.drop("before_run")  # reordered from before this run started
            return
        out_seq = (seq - self._seq_offset) & 0xFFFF
        out_ts = (h.timestamp + self._ts_offset) & 0xFFFFFFFF
        if 0 < ((out_seq - self._last_out_seq) & 0xFFFF) < 0x8000:  # seq_newer, inlined
            self._last_out_seq = out_seq
            self._last_out_ts = out_ts
            self._last_out_time = now
        self._sent_map[out_seq & 511] = (out_seq << 16) | seq
        # Video usually carries neither level nor abs-send-time: its block is constant.
        ext = self._bare_ext if level is None and ast is None else self._extensions(level, ast)
        packet = b"".join((
            _FIXED.pack(RTP_V2 | (EXT_BIT if ext else 0) | (len(h.csrcs) >> 2),
                        (0x80 if h.marker else 0) | self._pt, out_seq, out_ts, self._ssrc),
            h.csrcs, ext, payload))
        if self._sub.send_rtp(packet):
            self.packets += 1
            self.octets += len(payload)
            stats = self.stats
            stats.forwarded_packets += 1
            stats.forwarded_bytes += len(packet)
        else:
            self.stats.drop("send_failed")

    def _not_sending(self) -> str:
        if not self.active:
            return "last_n"
        if self.params is None or not self._sub.up:
            return "not_ready"
        return "codec_not_negotiated"

    def _extensions(self, level: bytes | None, ast: bytes | None) -> bytes:
        """Our RFC 8285 block: our MID (RFC 8843 §15), the audio level kept (RFC 6464),
        abs-send-time kept; every id is the subscriber's, not the publisher's."""
        if not self._one_byte or (level is not None and len(level) != 1) \
                or (ast is not None and len(ast) != 3):
            return self._extensions_slow(level, ast)  # never with aiortc's ids
        body = self._mid_elem
        if level is not None and self._level_head:
            body += self._level_head + level
        if ast is not None and self._ast_head:
            body += self._ast_head + ast
        if not body:
            return b""
        pad = -len(body) & 3
        return _ONE_BYTE_HEAD[(len(body) + pad) >> 2] + body + _PAD[pad]

    def _extensions_slow(self, level: bytes | None, ast: bytes | None) -> bytes:
        p = self.params
        if p is None:
            return b""
        elements: list[tuple[int, bytes]] = []
        if p.mid_id is not None:
            elements.append((p.mid_id, p.mid.encode()))
        if p.audio_level_id is not None and level is not None:
            elements.append((p.audio_level_id, level))
        if p.abs_send_time_id is not None and ast is not None:
            elements.append((p.abs_send_time_id, ast))
        return build_extensions(elements)

    def skip(self, h: RtpHeader) -> None:
        """Dropping an in-order packet shifts later ones down by one: no hole (no NACK)."""
        if self._started and seq_newer(h.sequence_number, self._last_in_seq):
            self._last_in_seq = h.sequence_number
            self._seq_offset = (self._seq_offset + 1) & 0xFFFF

    def retransmit(self, lost: list[int]) -> None:
        """Answer a NACK (RFC 4585 §6.2.1) from the cache, as RTX if negotiated (RFC 4588)."""
        track, p = self.track, self.params
        if track is None or p is None or self._pt < 0:
            return
        for out_seq in lost[:64]:
            entry = self._sent_map[out_seq & 511]
            cached = None
            if entry >= 0 and entry >> 16 == out_seq:
                cached = track.cached(entry & 0xFFFF)
            if cached is None:
                self.stats.add("nack_misses")
                continue
            data, h = cached
            out_ts = (h.timestamp + self._ts_offset) & 0xFFFFFFFF
            exts = h.extensions
            ext = self._extensions(exts.get(track._level_id) if track._level_id else None,
                                   exts.get(track._ast_id) if track._ast_id else None)
            payload = data[h.payload_offset : h.payload_end]
            pt, ssrc, seq = self._pt, p.ssrc, out_seq
            if p.rtx_payload_type is not None:
                # RFC 4588 §4: RTX payload = original sequence number + original payload
                payload = struct.pack("!H", out_seq) + payload
                pt, ssrc = p.rtx_payload_type, p.rtx_ssrc
                self._rtx_seq = seq = (self._rtx_seq + 1) & 0xFFFF
            # else: no RTX negotiated, resend the packet as it was
            packet = build_packet(payload_type=pt, sequence_number=seq, timestamp=out_ts,
                                  ssrc=ssrc, marker=h.marker, extensions=ext,
                                  payload=payload, csrcs=h.csrcs)
            if self._sub.send_rtp(packet):
                self.stats.add("rtx_sent")

    def translate_sr(self, sr: rtcp.SenderReport) -> bytes | None:
        """The publisher's SR, restated in this slot's SSRC and timestamp space."""
        if not self._started or not self.ready or self.params is None:
            return None
        return bytes(rtcp.SenderReport(self.params.ssrc, sr.ntp,
                                       (sr.rtp_timestamp + self._ts_offset) & 0xFFFFFFFF,
                                       self.packets, self.octets))
