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
from ._fanout import Lane, fanout, skip
from .peer import Negotiated
from .rtp import RtpHeader, build_extensions, build_packet, seq_newer
from .stats import Stats
from .vp8 import is_keyframe

if TYPE_CHECKING:
    from .outbox import Outbox
    from .participant import Participant

logger = logging.getLogger(__name__)

CLOCK = {"audio": 48000, "video": 90000}
CODEC = {"audio": "opus", "video": "vp8"}  # DESIGN.md: the only codecs negotiated
SILENCE = 127  # RFC 6464 §3: the lowest level, -127 dBov: digital silence
RTP_V2 = 0x80  # RFC 3550 §5.1: V=2 in the first octet
EXT_BIT = 0x10  # RFC 3550 §5.1: X
_FIXED = struct.Struct("!BBHII")


class PublishedTrack:
    """One audio or video stream a participant sends to the SFU."""

    def __init__(self, owner: Participant, kind: str, mid: str, stats: Stats,
                 cache_size: int, pli_interval: float, drop_silence: bool = True,
                 outbox: Outbox | None = None) -> None:
        self.owner = owner
        # None: fanout sends each packet at once (no UDP GSO batching, sfu/outbox.py)
        self.outbox = outbox
        self._batch = outbox.batch if outbox is not None else None
        self.kind = kind
        self.mid = mid  # the publisher's MID for this m-line
        self.ssrc: int | None = None  # learned from SDP a=ssrc or from the MID extension
        self.stats = stats
        self.slots: list[Slot] = []
        self.lanes: list[Lane] = []  # slots[i].lane, in the same order: fanout's input
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
                # every subscriber, keeping their sequence numbers gapless (Slot.skip, for
                # every lane at once in C).
                skip(self.lanes, seq)
                self.stats.drop("silence")
                return
        if not self.lanes:
            return
        now = time.monotonic()
        # The per-subscriber loop, compiled (sfu/_fanout.c says why): every lane in the
        # common case is rewritten, protected and sent there; the others come back.
        # With an outbox each packet waits in its peer's run until the end of this turn
        # of the event loop and leaves with that peer's other packets in one send.
        sent, octets, failed, paused, slow = fanout(self.lanes, data, start, h.payload_end,
                                                    level, ast, now, self._batch)
        if self.outbox is not None:
            self.outbox.staged()
        stats = self.stats
        stats.forwarded_packets += sent
        stats.forwarded_bytes += octets
        if failed:
            stats.drop("send_failed", failed)
        if paused:
            stats.drop("last_n", paused)
        if slow is not None:
            stats.add("general_path", len(slow))  # lanes Slot.forward handled, not fanout
            payload = data[start : h.payload_end]
            slots = self.slots
            for i in slow:
                slots[i].forward(h, payload, level, ast, key, now)

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
        self.lanes.clear()
        self._cache = [b""] * self._cache_size
        self._cache_seq = array("l", [-1]) * self._cache_size


class Slot:
    """One m-line of a subscriber's ``sub`` PeerConnection, showing one published track.

    Its rewrite state lives in a ``Lane`` (sfu/_fanout.c), which ``fanout`` updates in
    the common case and ``forward`` (below) in every other; both write the same bytes.
    """

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
        self._last_key_request = -1e9
        # Rewrite state, continuous across publishers and pauses (DESIGN.md "Media plane"):
        # out seq = in seq - seq_offset, out ts = in ts + ts_offset; a run starts when the
        # first packet after an attach or a resume arrives (``started``).
        lane = self.lane = Lane(self._sub.sender)
        lane.last_out_seq = random.getrandbits(16)
        lane.last_out_ts = random.getrandbits(32)
        lane.last_out_time = time.monotonic()
        self._rtx_seq = random.getrandbits(16)

    # the lane's flags and counters, under the names the rest of the SFU uses
    @property
    def active(self) -> bool:
        """False when last-N leaves this publisher out."""
        return self.lane.active

    @property
    def waiting_key(self) -> bool:
        return self.lane.waiting_key

    @property
    def packets(self) -> int:
        return self.lane.packets

    @property
    def octets(self) -> int:
        return self.lane.octets

    @property
    def ssrc(self) -> int:
        return self.params.ssrc if self.params else 0

    def set_params(self, params: Negotiated) -> None:
        """The subscriber's answer is in: precompute everything per-packet rewriting needs."""
        self.params = params
        lane = self.lane
        lane.pt = params.payload_types.get(CODEC[self.kind], -1)
        lane.ssrc = params.ssrc
        mid = params.mid.encode()
        ids = [i for i in (params.mid_id, params.audio_level_id, params.abs_send_time_id)
               if i is not None]
        # every element fits RFC 8285 §4.2's one-byte form (the lane remembers which)
        if all(1 <= i <= 14 for i in ids) and 1 <= len(mid) <= 16:
            lane.set_ext(bytes([(params.mid_id << 4) | (len(mid) - 1)]) + mid
                         if params.mid_id is not None else b"",
                         bytes([params.audio_level_id << 4])
                         if params.audio_level_id is not None else b"",
                         bytes([(params.abs_send_time_id << 4) | 2])
                         if params.abs_send_time_id is not None else b"",
                         True)
        else:
            lane.set_ext(b"", b"", b"", False)

    def attach(self, track: PublishedTrack) -> None:
        """Show ``track`` in this slot from the next key frame on (video)."""
        self.detach()
        self.track = track
        self.publisher = track.owner.pid
        track.slots.append(self)
        track.lanes.append(self.lane)
        self.lane.started = False
        self.lane.waiting_key = self.kind == "video"
        self._last_key_request = -1e9

    def detach(self) -> None:
        track = self.track
        if track is not None and self in track.slots:
            del track.lanes[track.slots.index(self)]
            track.slots.remove(self)
        self.track = None
        self.lane.started = False

    def set_active(self, active: bool) -> None:
        """Pause or resume (last-N); a resumed video slot waits for a key frame."""
        lane = self.lane
        if active == lane.active:
            return
        lane.active = active
        lane.started = False
        if active and self.kind == "video":
            lane.waiting_key = True
            self._last_key_request = -1e9

    @property
    def ready(self) -> bool:
        return self.params is not None and self._sub.up

    def forward(self, h: RtpHeader, payload: bytes, level: bytes | None, ast: bytes | None,
                key: bool, now: float) -> None:
        """Rewrite and send one packet, or skip it keeping sequence numbers continuous.

        The general path: ``fanout`` (sfu/_fanout.c) does the common case of this for
        every lane at once and hands the rest here: paused, not ready, awaiting a key
        frame, the first packet of a run, a packet from before the run, an outbound not
        resolved yet, extension ids beyond the one-byte form.
        """
        lane = self.lane
        if not lane.active or lane.pt < 0 or not self._sub.up:
            self.skip(h)
            self.stats.drop(self._not_sending())
            return
        if lane.waiting_key:
            if not key:
                self.skip(h)
                self.stats.drop("await_keyframe")
                track = self.track
                if track is not None and now - self._last_key_request >= track.pli_interval:
                    self._last_key_request = now
                    track.request_keyframe("subscriber_added")
                return
            lane.waiting_key = False
        seq = h.sequence_number
        if not lane.started:
            # Start a run: next out seq follows the last one sent, timestamps advance by
            # the wall time elapsed, so the subscriber sees one continuous stream.
            out_ts = lane.last_out_ts + max(1, int((now - lane.last_out_time)
                                                   * CLOCK[self.kind]))
            lane.seq_offset = (seq - lane.last_out_seq - 1) & 0xFFFF
            lane.ts_offset = (out_ts - h.timestamp) & 0xFFFFFFFF
            lane.resume_seq = seq
            lane.last_in_seq = seq
            lane.started = True
        elif seq_newer(seq, lane.last_in_seq):
            lane.last_in_seq = seq
        elif seq != lane.resume_seq and not seq_newer(seq, lane.resume_seq):
            self.stats.drop("before_run")  # reordered from before this run started
            return
        out_seq = (seq - lane.seq_offset) & 0xFFFF
        out_ts = (h.timestamp + lane.ts_offset) & 0xFFFFFFFF
        if seq_newer(out_seq, lane.last_out_seq):
            lane.last_out_seq = out_seq
            lane.last_out_ts = out_ts
            lane.last_out_time = now
        lane.note_sent(out_seq, seq)
        ext = self._extensions(level, ast)
        packet = b"".join((
            _FIXED.pack(RTP_V2 | (EXT_BIT if ext else 0) | (len(h.csrcs) >> 2),
                        (0x80 if h.marker else 0) | lane.pt, out_seq, out_ts, lane.ssrc),
            h.csrcs, ext, payload))
        if self._sub.send_rtp(packet):
            lane.packets += 1
            lane.octets += len(payload)
            stats = self.stats
            stats.forwarded_packets += 1
            stats.forwarded_bytes += len(packet)
        else:
            self.stats.drop("send_failed")

    def _not_sending(self) -> str:
        if not self.lane.active:
            return "last_n"
        if self.params is None or not self._sub.up:
            return "not_ready"
        return "codec_not_negotiated"

    def _extensions(self, level: bytes | None, ast: bytes | None) -> bytes:
        """Our RFC 8285 block: our MID (RFC 8843 §15), the audio level kept (RFC 6464),
        abs-send-time kept; every id is the subscriber's, not the publisher's."""
        block = self.lane.extensions(level, ast)  # the one-byte form, as fanout writes it
        return block if block is not None else self._extensions_general(level, ast)

    def _extensions_general(self, level: bytes | None, ast: bytes | None) -> bytes:
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
        self.lane.skip(h.sequence_number)  # sfu/_fanout.c lane_skip, which fanout uses too

    def retransmit(self, lost: list[int]) -> None:
        """Answer a NACK (RFC 4585 §6.2.1) from the cache, as RTX if negotiated (RFC 4588)."""
        track, p, lane = self.track, self.params, self.lane
        if track is None or p is None or lane.pt < 0:
            return
        for out_seq in lost[:64]:
            seq = lane.sent_as(out_seq)
            cached = track.cached(seq) if seq >= 0 else None
            if cached is None:
                self.stats.add("nack_misses")
                continue
            data, h = cached
            out_ts = (h.timestamp + lane.ts_offset) & 0xFFFFFFFF
            exts = h.extensions
            ext = self._extensions(exts.get(track._level_id) if track._level_id else None,
                                   exts.get(track._ast_id) if track._ast_id else None)
            payload = data[h.payload_offset : h.payload_end]
            pt, ssrc, seq = lane.pt, p.ssrc, out_seq
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
        lane = self.lane
        if not lane.started or not self.ready or self.params is None:
            return None
        return bytes(rtcp.SenderReport(self.params.ssrc, sr.ntp,
                                       (sr.rtp_timestamp + lane.ts_offset) & 0xFFFFFFFF,
                                       lane.packets, lane.octets))
