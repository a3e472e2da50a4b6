"""Published tracks (one publisher m-line) and slots (one subscriber m-line).

A ``PublishedTrack`` receives a publisher's packets; each ``Slot`` it is attached to
rewrites them for one subscriber: SSRC, payload type, sequence number, timestamp and
the MID header extension become the ones that subscriber's SDP announced (Chromium
routes by MID first), and the audio-level extension is kept with the subscriber's id.
Payload bytes are never touched: under E2EE they are ciphertext.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import struct
import time
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import rtcp
from ._fanout import Lane, fanout, skip
from .nackgen import NackGenerator
from .peer import Negotiated
from .rtp import RtpHeader, abs_send_time, build_extensions, build_packet, seq_newer
from .stats import Stats
from .transportcc import PLACEHOLDER as TWCC_PLACEHOLDER
from .vp8 import Vp8Descriptor, frame_size, is_keyframe, rewrite_descriptor

if TYPE_CHECKING:
    from aiortc import RTCRtpTransceiver

    from .allocator import DownlinkBudget
    from .outbox import Outbox
    from .participant import Participant

logger = logging.getLogger(__name__)

CLOCK = {"audio": 48000, "video": 90000}
CODEC = {"audio": "opus", "video": "vp8"}  # the only codecs negotiated (docs/SFU.md)
SILENCE = 127  # RFC 6464 §3: the lowest level, -127 dBov: digital silence
RTP_V2 = 0x80  # RFC 3550 §5.1: V=2 in the first octet
EXT_BIT = 0x10  # RFC 3550 §5.1: X
PADDING_BIT = 0x20  # RFC 3550 §5.1: P
# bytes a forwarded packet carries besides its payload, as a receiver's estimator counts
# them: the RTP header (12), our extensions (8-12) and the SRTP tag (10, RFC 3711 §4.2)
RTP_OVERHEAD = 32
NACK_CHUNK = 256  # sequence numbers per NACK packet we send (≤ 256 FCI entries, RFC 4585)
LIVE = 2.0  # seconds: a simulcast layer with no packet for this long is not selectable
# report intervals over which ``PublishedTrack.peak_bitrate`` is the highest rate: what an
# upgrade to a layer is judged on. One interval's rate is what the publisher managed to
# encode in it: measured here, a publisher short of CPU for a second showed its 540-line
# layer at 362 kbit/s, a viewer on a 1.5 Mbit/s link was switched to it and got 3 Mbit/s.
PEAK_INTERVALS = 5
RUNS_KEPT = 8  # a simulcast slot's recent runs (layer, offsets), for answering NACKs
LEFT_KEEP = 1.5  # seconds a layer still repairs the runs of slots that left it (> NACK give-up)
LEFT_MAX = 64  # slots a layer remembers having left it
HELD_BACK_MAX = 64  # packets a run started by a repair sends after it from the cache
_FIXED = struct.Struct("!BBHII")
# Temporal layers (docs/SFU.md "Simulcast"): Lane.max_tid when nothing is filtered, and
# the flags of a Lane.drop_log entry (seq | PictureID << 16 | ...)
TID_ALL = 255
DROP_HAS_PID = 1 << 31
DROP_NEW_PICTURE = 1 << 32
PAD_ONE = b"\x01"  # a payload of one padding octet (RFC 3550 §5.1 P: it counts itself)


def drop_shift(log: Sequence[int], total: int, seq: int,
               picture_id: int | None) -> tuple[int, int, bool] | None:
    """What a run dropped after the layer's packet ``seq`` (``log``: Lane.drop_log, the
    newest of the ``total`` drops of the run): (sequence numbers, pictures, whether
    ``seq``'s own picture was dropped). A late packet, a repair or a NACK takes its
    offsets from it: mediasoup's SeqManager likewise counts the dropped inputs below an
    input. None when the bounded log no longer reaches back to ``seq``."""
    if total > len(log) and (not log or not seq_newer(seq, log[0] & 0xFFFF)):
        return None
    n_seq = n_pic = 0
    dropped = False
    for entry in log:
        if seq_newer(entry & 0xFFFF, seq):
            n_seq += 1
            if entry & DROP_NEW_PICTURE:
                n_pic += 1
        if picture_id is not None and entry & DROP_HAS_PID and \
                (entry >> 16) & 0x7FFF == picture_id:
            dropped = True
    return n_seq, n_pic, dropped


def drop_in_seq(log: Sequence[int], total: int, out_seq: int, end_offset: int) -> int:
    """The layer's sequence number a run sent (or left a hole) as ``out_seq``, given its
    drops (as ``drop_shift``) and its seq offset after the last of them; -1 if unknown.
    Between two drops the offset is constant; each drop moved it up by one."""
    offset = end_offset
    upper: int | None = None  # the drop just after the stretch looked at
    for entry in reversed(log):
        lower = entry & 0xFFFF
        seq = (out_seq + offset) & 0xFFFF
        if seq_newer(seq, lower) and (upper is None or seq_newer(upper, seq)):
            return seq
        upper = lower
        offset = (offset - 1) & 0xFFFF
    if total > len(log):
        return -1
    seq = (out_seq + offset) & 0xFFFF
    return seq if upper is None or seq_newer(upper, seq) else -1


def picture_id_of(payload: bytes) -> int | None:
    try:
        return Vp8Descriptor.parse(payload).picture_id
    except ValueError:
        return None


class Run:
    """One run of a simulcast slot: consecutive packets of one layer, one set of offsets
    (out seq = in seq - seq_offset, out ts = in ts + ts_offset, the descriptor's)."""

    __slots__ = ("dropped", "end_picture_offset", "end_seq_offset", "first", "lane", "layer",
                 "log", "picture_offset", "resume_seq", "seq_offset", "tl0_offset",
                 "ts_offset")

    def __init__(self, first: int, layer: PublishedTrack, lane: Lane) -> None:
        self.first = first  # the out seq of its first packet
        self.layer = layer
        self.resume_seq = lane.resume_seq  # the in seq of its first packet
        self.seq_offset = lane.seq_offset
        self.ts_offset = lane.ts_offset
        self.picture_offset = lane.picture_offset
        self.tl0_offset = lane.tl0_offset
        # the run's drops (temporal filter, Lane.drop_log): read from the lane while it
        # runs, kept here when it ends (``close``)
        self.lane: Lane | None = lane
        self.log: Sequence[int] = ()
        self.dropped = 0
        self.end_seq_offset = self.seq_offset
        self.end_picture_offset = self.picture_offset

    def close(self) -> None:
        """The run is over: keep its drops (at most the lane's log) and final offsets."""
        lane = self.lane
        if lane is None:
            return
        # flat 8-byte entries, at most DROP_LOG: 2 KiB for a run that dropped
        self.log = array("Q", lane.drop_log()) if lane.dropped else ()
        self.dropped = lane.dropped
        self.end_seq_offset, self.end_picture_offset = lane.seq_offset, lane.picture_offset
        self.lane = None

    def _drops(self) -> tuple[Sequence[int], int, int, int]:
        lane = self.lane
        if lane is None:
            return self.log, self.dropped, self.end_seq_offset, self.end_picture_offset
        if not lane.dropped:
            return (), 0, lane.seq_offset, lane.picture_offset
        return lane.drop_log(), lane.dropped, lane.seq_offset, lane.picture_offset

    def offsets(self, seq: int, payload: bytes) -> tuple[int, int, bool] | None:
        """(seq offset, PictureID offset, dropped) the layer's packet ``seq`` (``payload``)
        has in this run: dropped when the temporal filter dropped its picture (it is
        then sent as padding, ``Slot.forward``); None if the drop log does not tell."""
        log, total, seq_end, picture_end = self._drops()
        if not total:
            return self.seq_offset, self.picture_offset, False
        shift = drop_shift(log, total, seq, picture_id_of(payload))
        if shift is None:
            return None
        return (seq_end - shift[0]) & 0xFFFF, (picture_end + shift[1]) & 0x7FFF, shift[2]

    def in_seq(self, out_seq: int) -> int:
        """The layer's sequence number behind ``out_seq`` in this run (-1: unknown)."""
        log, total, seq_end, _ = self._drops()
        if not total:
            return (out_seq + self.seq_offset) & 0xFFFF
        return drop_in_seq(log, total, out_seq, seq_end)


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
        # upstream loss recovery (sfu/nackgen.py): video only, NACK is negotiated for it
        self.nacks: NackGenerator | None = NackGenerator() if kind == "video" else None
        self._nack_timer: asyncio.TimerHandle | None = None
        self.unrepaired = 0  # holes given up on: every subscriber sees them as losses
        self.rtx_ssrc: int | None = None  # the publisher's RTX SSRC (RFC 4588 §8.3 FID)
        self.rtx_payload_type = -1
        # RFC 3550 §6.4.1 / App. A.8 interarrival jitter, in timestamp units
        self._transit: int | None = None
        self.jitter = 0.0
        # the rate this track arrives at (bits/s), measured each report interval: what
        # forwarding it costs a subscriber's budget (sfu/allocator.py)
        self.bitrate = 0
        self._rate_mark = (0, time.monotonic())
        self._rates: collections.deque[int] = collections.deque(maxlen=PEAK_INTERVALS)
        # Simulcast (docs/SFU.md "Simulcast"): the m-line's track keeps one PublishedTrack
        # per layer in ``layers`` and receives nothing itself; each layer has its own
        # SSRC and RTX SSRC (bound by RID, sfu/simulcast.py), cache, NACKs, key-frame
        # throttle and rate, and forwards to the slots that are on it now.
        self.layers: list[PublishedTrack] = []
        self.parent: PublishedTrack | None = None  # a layer's m-line track
        self.index = 0  # a layer's place in the offer's simulcast list: lowest first
        self.rid = ""
        self.width = self.height = 0  # a layer's size, from its last key frame
        self.picture_id = -1  # a layer's newest VP8 PictureID and TL0PICIDX (-1: none yet)
        self.tl0 = -1
        self.last_packet = -1e9  # when a layer's last packet came (monotonic)
        # a layer's bytes per VP8 temporal layer (TID 0..3, RTP_OVERHEAD included), and
        # from them each report interval (``measure``) the rate of TID <= t for each t
        # below its highest TID: what the allocator can step down to (docs/SFU.md)
        self._tid_octets = [0, 0, 0, 0]
        self._tid_mark = [0, 0, 0, 0]
        self.temporal_rates: tuple[int, ...] = ()
        self.switching: list[Slot] = []  # slots waiting for a key frame of this layer
        # (when, slot) for slots that left this layer lately: a repair that comes after
        # a switch still fills the hole it left in their last run here (Slot.fill)
        self.left: list[tuple[float, Slot]] = []

    def add_layers(self, rids: list[str]) -> None:
        """Make this video track simulcast: one layer per RID, lowest quality first."""
        for i, rid in enumerate(rids):
            layer = PublishedTrack(self.owner, self.kind, self.mid, self.stats,
                                   self._cache_size, self.pli_interval, self.drop_silence,
                                   self.outbox)
            layer.parent, layer.index, layer.rid = self, i, rid
            self.layers.append(layer)

    def streams(self) -> list[PublishedTrack]:
        """What arrives on SSRCs of its own: the layers, or the track itself."""
        return self.layers or [self]

    def live(self, now: float) -> bool:
        """A layer that sent a packet lately (a paused encoding sends nothing)."""
        return now - self.last_packet <= LIVE

    def set_pub(self, pub: Negotiated) -> None:
        """The publisher's negotiated m-line: which extension ids carry what."""
        self.pub = pub
        self.payload_type = pub.payload_types.get(CODEC[self.kind], -1)
        self._level_id = pub.audio_level_id or 0
        self._ast_id = pub.abs_send_time_id or 0
        self.rtx_payload_type = pub.rtx_payload_type if pub.rtx_payload_type is not None else -1
        for layer in self.layers:
            layer.set_pub(pub)

    # --- receive path -----------------------------------------------------------------

    def on_rtp(self, h: RtpHeader, data: bytes) -> None:
        """Account for one packet from the publisher, then forward it (hot path)."""
        now = time.monotonic()
        seq = h.sequence_number
        nacks = self.nacks
        if nacks is not None:
            what, holes = nacks.received(seq, now)
            if what != "in-order":  # rare: everything else happens off the common path
                if what == "old" and self._cache_seq[seq % self._cache_size] == seq:
                    self.stats.drop("duplicate")
                    return
                self._sequence_event(what, holes, now)
        self._count(h, now)
        self._forward(h, data, now)

    def on_rtx(self, h: RtpHeader, data: bytes) -> None:
        """A packet on the publisher's RTX SSRC: a repair we asked for, or a probe.

        RFC 4588 §4: the payload starts with the original sequence number (OSN), then
        the original payload; everything else in the header is the RTX stream's own. The
        original packet is rebuilt byte for byte (our SSRC and PT, its OSN, the same
        timestamp, marker and extensions) and forwarded like any other: each subscriber
        gets it in its own rewritten sequence, where it fills the hole it left.
        """
        start, end = h.payload_offset, h.payload_end
        if end - start < 2:  # RFC 4588 §4 padding-only: bandwidth probes, nothing to repair
            self.stats.drop("rtx_padding")
            return
        self.stats.add("rtx_received")
        osn = data[start : start + 2]
        seq = int.from_bytes(osn, "big")
        now = time.monotonic()
        nacks = self.nacks
        if nacks is None or self.ssrc is None or not nacks.repaired(seq, now):
            # a repair that came too late, twice, or unasked (Chromium resends old media
            # on RTX as padding when it probes): what it carries was handled already
            self.stats.drop("rtx_duplicate")
            return
        self.stats.add("upstream_recovered")
        head = bytearray(data[:start])
        head[0] &= 0xDF  # RFC 3550 §5.1 P: the RTX packet's padding is not the original's
        head[1] = (head[1] & 0x80) | self.payload_type
        head[2:4] = osn
        head[8:12] = self.ssrc.to_bytes(4, "big")
        original = bytes(head) + data[start + 2 : end]
        self.received += 1
        self.octets += end - start - 2
        repaired = RtpHeader.parse(original)
        self._forward(repaired, original, now, repair=True)
        for then, slot in self.left:
            if now - then < LEFT_KEEP:
                slot.fill(self, repaired, original, now)

    def _sequence_event(self, what: str, holes: list[int], now: float) -> None:
        """A hole, a hole filled by a late original, or a jump (sfu/nackgen.py)."""
        if what == "gap":
            self._send_nack(holes)
            self._schedule_nacks(now)
        elif what == "filled":
            self.stats.add("upstream_late")
        elif what == "reset":
            self.stats.add("upstream_resets")
            self.request_keyframe("upstream_loss")

    def _send_nack(self, seqs: list[int]) -> None:
        """RFC 4585 §6.2.1 generic NACK to the publisher for ``seqs``, in packets of at most
        ``NACK_CHUNK`` sequence numbers (≤ 1 KiB of FCI: one SRTCP datagram)."""
        if self.ssrc is None or not seqs:
            return
        self.stats.add("upstream_nacked", len(seqs))
        for i in range(0, len(seqs), NACK_CHUNK):
            nack = rtcp.Nack(self.owner.rtcp_ssrc, self.ssrc, seqs[i : i + NACK_CHUNK])
            if self.owner.send_rtcp(bytes(nack)):
                self.stats.add("upstream_nacks_sent")

    def _schedule_nacks(self, now: float) -> None:
        nacks = self.nacks
        if self._nack_timer is not None or nacks is None:
            return
        wait = nacks.next_due(now)
        if wait is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller (micro benchmarks): first NACKs only
            return
        self._nack_timer = loop.call_later(wait, self._nack_tick)

    def _nack_tick(self) -> None:
        """Ask again for the holes still open; give up on the old ones with one PLI."""
        self._nack_timer = None
        nacks = self.nacks
        if nacks is None:
            return
        now = time.monotonic()
        again, given_up = nacks.due(now)
        self._send_nack(again)
        if given_up:
            self.unrepaired += given_up
            self.stats.add("upstream_unrepaired", given_up)
            self.request_keyframe("upstream_loss")
        self._schedule_nacks(now)

    def _forward(self, h: RtpHeader, data: bytes, now: float, repair: bool = False) -> None:
        """Forward one packet to every attached slot (hot path).

        Everything that is the same for all subscribers is done once here: the payload
        slice, the extension values kept, key-frame and silence detection, the clock.
        """
        seq = h.sequence_number
        self._cache[seq % self._cache_size] = data
        self._cache_seq[seq % self._cache_size] = seq
        exts = h.extensions
        level = exts.get(self._level_id) if self._level_id else None
        if level is not None and len(level) != 1:
            # RFC 6464 §3: the element is one octet. Anything else is not forwarded as a
            # level (the packet still is): subscribers never get a malformed element.
            level = None
            self.stats.add("bad_audio_level")
        # kept only where the publisher sent one, but stamped with our clock (abs_send_time)
        ast = abs_send_time(now) if self._ast_id and self._ast_id in exts else None
        key = False
        start = h.payload_offset
        if self.kind == "video":
            # Only the first packet of a frame can start a key frame (RFC 7741 §4.3: S=1,
            # PID=0); the byte test spares the descriptor parse on all the others.
            if start < h.payload_end and data[start] & 0x17 == 0x10:
                key = is_keyframe(data[start : h.payload_end])
                if key:
                    self.keyframes += 1
            if self.parent is not None:  # a simulcast layer
                self._layer_packet(data[start : h.payload_end], key, now, repair)
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
        # The per-subscriber loop, compiled (sfu/_fanout.c says why): every lane in the
        # common case is rewritten, protected and sent there; the others come back.
        # With an outbox each packet waits in its peer's run until the end of this turn
        # of the event loop and leaves with that peer's other packets in one send.
        sent, octets, failed, paused, slow, temporal = fanout(
            self.lanes, data, start, h.payload_end, level, ast, now, self._batch)
        if self.outbox is not None:
            self.outbox.staged()
        stats = self.stats
        stats.forwarded_packets += sent
        stats.forwarded_bytes += octets
        if failed:
            stats.drop("send_failed", failed)
        if paused:
            stats.drop("last_n", paused)
        if temporal:
            stats.add("temporal_dropped", temporal)
        if slow is not None:
            stats.add("general_path", len(slow))  # lanes Slot.forward handled, not fanout
            payload = data[start : h.payload_end]
            slots = self.slots
            for i in slow:
                slots[i].forward(h, payload, level, ast, key, now)

    def _layer_packet(self, payload: bytes, key: bool, now: float, repair: bool) -> None:
        """A simulcast layer's bookkeeping for one packet: when it came, its newest
        PictureID / TL0PICIDX, its size from a key frame, and the slots that switch to
        it at this key frame (they wait for one: docs/SFU.md "Simulcast"). A repaired key
        frame start switches nobody: the rest of that frame went by before it."""
        self.last_packet = now
        try:
            d = Vp8Descriptor.parse(payload)
        except ValueError:
            return
        if d.tid is not None:
            self._tid_octets[d.tid] += len(payload) + RTP_OVERHEAD
        if d.picture_id is not None and (self.picture_id < 0 or
                                         (d.picture_id - self.picture_id) & 0x7FFF < 0x4000):
            self.picture_id = d.picture_id  # newest in 15-bit arithmetic
            if d.tl0_pic_idx is not None:
                self.tl0 = d.tl0_pic_idx
        if key:
            size = frame_size(payload)
            if size is not None:
                self.width, self.height = size
            if self.switching and not repair:
                for slot in self.switching:
                    if slot.target is self:
                        slot.move_to(self)
                self.switching.clear()

    def _count(self, h: RtpHeader, now: float) -> None:
        """RFC 3550 App. A.1 sequence tracking (simplified: no probation) and App. A.8
        interarrival jitter, from packets on the media SSRC (repairs do not count for
        jitter: their arrival says nothing about the path's variation)."""
        seq = h.sequence_number
        self.received += 1
        self.octets += h.payload_end - h.payload_offset
        # App. A.8: transit = arrival - timestamp, both in timestamp units; J += (|D| - J)/16
        transit = int(now * CLOCK[self.kind]) - h.timestamp
        if self._transit is not None:
            d = (transit - self._transit) & 0xFFFFFFFF
            if d >= 0x80000000:  # the difference of two 32-bit clocks, signed
                d = 0x100000000 - d
            self.jitter += (d - self.jitter) / 16
        self._transit = transit
        if self._base_seq is None:
            self._base_seq = self._max_seq = seq
        elif seq_newer(seq, self._max_seq):
            if seq < self._max_seq:
                self._cycles += 1 << 16
            self._max_seq = seq

    def measure(self, now: float) -> int:
        """The arrival rate since the last call, in bits/s, counting ``RTP_OVERHEAD``
        bytes per packet for what a subscriber receives besides the payload."""
        mark, then = self._rate_mark
        total = self.octets + RTP_OVERHEAD * self.received
        self._rate_mark = (total, now)
        if now > then:
            self.bitrate = int((total - mark) * 8 / (now - then))
            self._rates.append(self.bitrate)
            if self.parent is not None:
                octets = [a - b for a, b in zip(self._tid_octets, self._tid_mark, strict=True)]
                self._tid_mark = list(self._tid_octets)
                top = max((t for t in range(4) if octets[t]), default=0)
                self.temporal_rates = tuple(int(sum(octets[: t + 1]) * 8 / (now - then))
                                            for t in range(top))
        return self.bitrate

    @property
    def peak_bitrate(self) -> int:
        """The highest rate of the last ``PEAK_INTERVALS`` report intervals."""
        return max(self._rates, default=self.bitrate)

    @property
    def max_seq(self) -> int:
        """The newest sequence number received (RFC 3550 App. A.1 max_seq)."""
        return self._max_seq

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
                                int(self.jitter), lsr, dlsr)

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
        if self.layers:  # a simulcast m-line: every layer (its own SSRC, its own throttle)
            for layer in self.layers:
                layer.request_keyframe(reason)
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

    def remove(self, slot: Slot) -> None:
        """Take ``slot`` out of what this stream forwards to (its lane with it)."""
        if slot in self.slots:
            if self.layers:  # a simulcast m-line forwards nothing itself: no lanes
                self.slots.remove(slot)
            else:
                del self.lanes[self.slots.index(slot)]
                self.slots.remove(slot)
        if slot in self.switching:
            self.switching.remove(slot)

    def close(self) -> None:
        for timer in (self._pli_timer, self._nack_timer):
            if timer is not None:
                timer.cancel()
        self._pli_timer = self._nack_timer = None
        self.nacks = None
        for slot in list(self.slots):
            slot.detach()
        for layer in self.layers:
            layer.close()
        self.lanes.clear()
        self._cache = [b""] * self._cache_size
        self._cache_seq = array("l", [-1]) * self._cache_size


class Slot:
    """One m-line of a subscriber's ``sub`` PeerConnection, showing one published track.

    Its rewrite state lives in a ``Lane`` (sfu/_fanout.c), which ``fanout`` updates in
    the common case and ``forward`` (below) in every other; both write the same bytes.
    """

    def __init__(self, owner: Participant, kind: str, transceiver: RTCRtpTransceiver,
                 stats: Stats) -> None:
        self.owner = owner
        self.kind = kind
        self.transceiver = transceiver
        self.stats = stats
        self._sub = owner.sub  # the RawPeer this slot sends through
        self.params: Negotiated | None = None  # set once the subscriber's answer is applied
        self.track: PublishedTrack | None = None
        self.publisher: str | None = None  # the one participant this MID ever shows
        # what it forwards from: the track, or one simulcast layer of it; and the layer
        # it switches to at that layer's next key frame (docs/SFU.md "Simulcast")
        self.source: PublishedTrack | None = None
        self.target: PublishedTrack | None = None
        self.max_height: int | None = None  # sfu-video-constraints: no layer above this
        self.temporal: int | None = None  # the highest TID forwarded (None: all of them)
        self._switch_asked = -1e9
        # a simulcast slot's recent runs, to answer a NACK from the layer that packet
        # came from with the offsets it was sent with
        self._runs: list[Run] = []
        self._last_key_request = -1e9
        # why it may not forward (either pauses it): last-N, and the subscriber's budget
        self.lastn_ok = True
        self.fits = True
        self.announced: str | None = None  # the pause reason the subscriber was last told
        self.rtx_octets = 0  # retransmitted and padding bytes, for the subscriber's rate
        # Rewrite state, continuous across publishers and pauses (docs/SFU.md):
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
        # every element fits RFC 8285 §4.2's one-byte form (the lane remembers which; a
        # transport-wide sequence number is added by its Sender, sfu/transportcc.py)
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
        self._runs.clear()
        self.lane.vp8 = bool(track.layers)
        if track.layers:  # simulcast: start on the lowest layer, the allocator moves it
            self.target = track.layers[0]
            self.move_to(track.layers[0])
        else:
            track.lanes.append(self.lane)
            self.source = track
        self.set_temporal(None)  # every temporal layer of the new track (from its key frame)
        self.lane.started = False
        self.lane.waiting_key = self.kind == "video"
        self._last_key_request = -1e9
        self.announced = None

    def detach(self) -> None:
        track, source = self.track, self.source
        if source is not None and source is not track:
            source.remove(self)
        if track is not None:
            track.remove(self)
            for layer in track.layers:
                layer.remove(self)
        self.track = self.source = self.target = None
        self.lane.started = False

    # --- simulcast: which layer (docs/SFU.md "Simulcast") ---------------------------------

    def select(self, layer: PublishedTrack, now: float) -> None:
        """Forward ``layer`` of this slot's simulcast track from its next key frame on.

        Until that key frame the current layer goes on (mediasoup's SimulcastConsumer
        and LiveKit switch the same way); a slot that forwards nothing yet (waiting for a
        key frame, or paused) moves at once.
        """
        track = self.track
        if track is None or layer.parent is not track or layer is self.target:
            return
        self.target = layer
        for other in track.layers:
            if self in other.switching:
                other.switching.remove(self)
        if layer is self.source:
            return  # back to the layer it is on: the pending switch is off
        lane = self.lane
        if not lane.started or not lane.active:
            self.move_to(layer)
            return
        layer.switching.append(self)
        self.stats.add("simulcast_switch_requests")
        self._switch_asked = -1e9
        self.ask_switch_key(now)

    def set_temporal(self, tid: int | None) -> None:
        """Forward the temporal layers up to ``tid`` of the layer forwarded (None: all):
        a step down applies from the next picture, a step up from the next picture with
        the layer sync bit Y or the next key frame (``Lane.set_max_tid``, docs/SFU.md
        "Simulcast")."""
        if tid == self.temporal:
            return
        self.stats.add("temporal_switches_down" if tid is not None and (
            self.temporal is None or tid < self.temporal) else "temporal_switches_up")
        self.temporal = tid
        self.lane.set_max_tid(TID_ALL if tid is None else tid)

    def ask_switch_key(self, now: float) -> None:
        """A key frame of the target layer, through its throttle; again each interval."""
        target = self.target
        if target is None or target is self.source or self not in target.switching:
            return
        if now - self._switch_asked >= target.pli_interval:
            self._switch_asked = now
            target.request_keyframe("layer_switch")

    def move_to(self, layer: PublishedTrack) -> None:
        """Forward from ``layer`` now: the next packet starts a run, at a key frame."""
        old = self.source
        if old is layer:
            return
        if old is not None:
            old.remove(self)
            now = time.monotonic()
            old.left = [(t, s) for t, s in old.left[-(LEFT_MAX - 1):]
                        if now - t < LEFT_KEEP and s is not self]
            old.left.append((now, self))
            self.stats.add("simulcast_switches")
            self.stats.add("simulcast_switches_up" if layer.index > old.index
                           else "simulcast_switches_down")
        layer.slots.append(self)
        layer.lanes.append(self.lane)
        self.source = layer
        lane = self.lane
        lane.started = False
        lane.waiting_key = True
        self._last_key_request = -1e9

    def _start_vp8_run(self, payload: bytes, out_seq: int) -> None:
        """A simulcast run begins: offsets that continue the PictureID and TL0PICIDX the
        subscriber last got (from the layer it was on: its newest values plus the offsets
        then), so that the first picture of this run comes right after (RFC 7741 §4.2)."""
        lane, source = self.lane, self.source
        if source is None:
            return
        try:
            d = Vp8Descriptor.parse(payload)
        except ValueError:
            d = None
        prev = self._runs[-1].layer if self._runs else None
        if d is not None and prev is not None:
            if d.picture_id is not None and prev.picture_id >= 0:
                last = (prev.picture_id + lane.picture_offset) & 0x7FFF
                lane.picture_offset = (last + 1 - d.picture_id) & 0x7FFF
            if d.tl0_pic_idx is not None and prev.tl0 >= 0:
                last = (prev.tl0 + lane.tl0_offset) & 0xFF
                lane.tl0_offset = (last + 1 - d.tl0_pic_idx) & 0xFF
        self._runs.append(Run(out_seq, source, lane))
        del self._runs[:-RUNS_KEPT]

    def _run_of(self, out_seq: int) -> Run | None:
        """The run of a simulcast slot that ``out_seq`` belongs to."""
        for run in reversed(self._runs):
            if out_seq == run.first or seq_newer(out_seq, run.first):
                return run
        return None

    def _in_seq(self, run: Run, out_seq: int) -> int:
        """The layer's sequence number that ``out_seq`` stands for in ``run`` (sent or a
        hole the layer left), or -1 if it lies outside what the run received."""
        seq = run.in_seq(out_seq)
        if seq < 0 or seq_newer(run.resume_seq, seq):
            return -1
        if run is self._runs[-1] and seq_newer(seq, self.lane.last_in_seq):
            return -1
        return seq

    def fill(self, layer: PublishedTrack, h: RtpHeader, data: bytes, now: float) -> None:
        """A repair (RFC 4588) on ``layer``, which this slot left for another: if it fills
        a hole in the slot's last run on that layer, send it into that hole, rewritten
        with that run's offsets. Without it, an uplink loss on the old layer just before
        a switch would leave the subscriber a hole nobody can fill."""
        p, lane = self.params, self.lane
        if p is None or lane.pt < 0 or not self._sub.up:
            return
        seq = h.sequence_number
        payload = data[h.payload_offset : h.payload_end]
        for i in range(len(self._runs) - 2, -1, -1):
            run = self._runs[i]
            if run.layer is not layer:
                continue
            offsets = run.offsets(seq, payload)
            if offsets is None:
                continue
            seq_offset, picture_offset, dropped = offsets
            out_seq = (seq - seq_offset) & 0xFFFF
            end = self._runs[i + 1].first
            if seq_newer(run.resume_seq, seq) or not seq_newer(end, out_seq):
                continue  # not in that run
            if lane.sent_as(out_seq) >= 0:
                return  # sent already
            ext = self._extensions(None, abs_send_time(now) if layer._ast_id in h.extensions
                                   else None)
            packet = build_packet(payload_type=lane.pt, sequence_number=out_seq,
                                  timestamp=(h.timestamp + run.ts_offset) & 0xFFFFFFFF,
                                  ssrc=p.ssrc, marker=h.marker and not dropped,
                                  extensions=ext, payload=PAD_ONE if dropped else
                                  rewrite_descriptor(payload, picture_offset, run.tl0_offset),
                                  csrcs=h.csrcs)
            if dropped:  # a picture the temporal filter dropped: padding fills its place
                packet = bytes([packet[0] | PADDING_BIT]) + packet[1:]
            if self._sub.send_rtp(packet):
                lane.note_sent(out_seq, seq)
                self.stats.add("simulcast_late_repairs")
                self.stats.forwarded_packets += 1
                self.stats.forwarded_bytes += len(packet)
            return

    @property
    def paused_reason(self) -> str | None:
        """Why this slot forwards nothing (docs/PROTOCOL.md ``stream-state``), or None."""
        if not self.lastn_ok:
            return "last-n"
        if not self.fits:
            return "bandwidth"
        return None

    def allow(self, *, lastn: bool | None = None, fits: bool | None = None) -> bool:
        """Set one reason to pause or forward; True if that changed whether it forwards."""
        if lastn is not None:
            self.lastn_ok = lastn
        if fits is not None:
            self.fits = fits
        was = self.lane.active
        self.set_active(self.lastn_ok and self.fits)
        return was != self.lane.active

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
                track = self.source
                if track is not None and now - self._last_key_request >= track.pli_interval:
                    self._last_key_request = now
                    track.request_keyframe("subscriber_added")
                return
            lane.waiting_key = False
        seq = h.sequence_number
        seq_offset, picture_offset, padding = lane.seq_offset, lane.picture_offset, False
        starting = not lane.started
        if starting:
            # Start a run: next out seq follows the last one sent, timestamps advance by
            # the wall time elapsed, so the subscriber sees one continuous stream.
            if self._runs:
                self._runs[-1].close()
            lane.begin_run()
            out_ts = lane.last_out_ts + max(1, int((now - lane.last_out_time)
                                                   * CLOCK[self.kind]))
            seq_offset = lane.seq_offset = (seq - lane.last_out_seq - 1) & 0xFFFF
            lane.ts_offset = (out_ts - h.timestamp) & 0xFFFFFFFF
            lane.resume_seq = seq
            lane.last_in_seq = seq
            lane.started = True
            if lane.vp8:
                self._start_vp8_run(payload, (seq - lane.seq_offset) & 0xFFFF)
                picture_offset = lane.picture_offset
            if lane.max_tid != TID_ALL:
                lane.temporal(payload, seq)  # the run's first picture: kept, the filter starts
        elif seq_newer(seq, lane.last_in_seq):
            # the temporal filter (sfu/_fanout.c lane_temporal, which fanout runs too)
            if lane.max_tid != TID_ALL and lane.temporal(payload, seq):
                self.stats.add("temporal_dropped")
                return
            lane.last_in_seq = seq
        elif seq != lane.resume_seq and not seq_newer(seq, lane.resume_seq):
            self.stats.drop("before_run")  # reordered from before this run started
            return
        elif lane.dropped:
            # Late (a repair, reordering) after drops: the offsets it would have had in
            # order, from the drop log; a packet of a picture the temporal filter dropped
            # goes as padding, which fills its place (libwebrtc takes an empty packet as
            # padding: RtpVideoStreamReceiver2's NotifyReceiverOfEmptyPacket)
            shift = drop_shift(lane.drop_log(), lane.dropped, seq,
                               picture_id_of(payload) if lane.vp8 else None)
            if shift is None:
                self.stats.drop("temporal_unmapped")
                return
            seq_offset = (seq_offset - shift[0]) & 0xFFFF
            picture_offset = (picture_offset + shift[1]) & 0x7FFF
            padding = shift[2]
        out_seq = (seq - seq_offset) & 0xFFFF
        out_ts = (h.timestamp + lane.ts_offset) & 0xFFFFFFFF
        if seq_newer(out_seq, lane.last_out_seq):
            lane.last_out_seq = out_seq
            lane.last_out_ts = out_ts
            lane.last_out_time = now
        lane.note_sent(out_seq, seq)
        first = RTP_V2
        if padding:
            first |= PADDING_BIT
            payload = PAD_ONE
            self.stats.add("temporal_padding")
        elif lane.vp8:
            payload = rewrite_descriptor(payload, picture_offset, lane.tl0_offset)
        ext = self._extensions(level, ast)
        packet = b"".join((
            _FIXED.pack(first | (EXT_BIT if ext else 0) | (len(h.csrcs) >> 2),
                        (0x80 if h.marker and not padding else 0) | lane.pt, out_seq,
                        out_ts, lane.ssrc),
            h.csrcs, ext, payload))
        if lane.paced:
            # the subscriber's Pacer (sfu/pacer.py) sends it, and stamps abs-send-time then
            self.owner.pacer.push(packet, self._ast_offset(len(h.csrcs), ext, level, ast))
            sent = True
        else:
            sent = self._sub.send_rtp(packet)
        if sent:
            lane.packets += 1
            lane.octets += len(payload)
            stats = self.stats
            stats.forwarded_packets += 1
            stats.forwarded_bytes += len(packet)
        else:
            self.stats.drop("send_failed")
        source = self.source
        if starting and key and source is not None and seq_newer(source.max_seq, seq):
            self._send_held_back(source, seq, now)

    def _send_held_back(self, source: PublishedTrack, seq: int, now: float) -> None:
        """A run that started on a late packet: the publisher's repair (RFC 4588) of a key
        frame's first packet, after the packets behind it had come and been held back
        (``await_keyframe``). They follow it now from the cache, in order, so the
        subscriber gets the key frame whole and no hole where they were; one still
        missing is left to its own repair, which fills its place when it comes."""
        ahead = (source.max_seq - seq) & 0xFFFF
        if ahead > HELD_BACK_MAX:  # not one frame's worth: a stale repair, leave it
            return
        for i in range(1, ahead + 1):
            got = source.cached((seq + i) & 0xFFFF)
            if got is None:
                continue
            data, h = got
            ast = abs_send_time(now) if source._ast_id and source._ast_id in h.extensions else None
            self.forward(h, data[h.payload_offset : h.payload_end], None, ast, False, now)
            self.stats.add("held_back_sent")

    def _ast_offset(self, csrcs: int, ext: bytes, level: bytes | None,
                    ast: bytes | None) -> int:
        """Where the abs-send-time value lies in a packet of ours (-1: it has none).

        Our one-byte block (RFC 8285 §4.2) is MID, then the level, then abs-send-time, in
        that order (``Lane.set_ext``); a two-byte block is left as it is.
        """
        p = self.params
        if ast is None or p is None or p.abs_send_time_id is None or ext[:2] != b"\xbe\xde":
            return -1
        at = 12 + csrcs + 4 + 1
        if p.mid_id is not None:
            at += 1 + len(p.mid)
        if level is not None and p.audio_level_id is not None:
            at += 2
        return at

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
        if p.twcc_id is not None:
            # last, so that _ast_offset holds; RawPeer.stamp writes the number as it leaves
            elements.append((p.twcc_id, TWCC_PLACEHOLDER))
        return build_extensions(elements)

    def skip(self, h: RtpHeader) -> None:
        """Dropping an in-order packet shifts later ones down by one: no hole (no NACK)."""
        self.lane.skip(h.sequence_number)  # sfu/_fanout.c lane_skip, which fanout uses too

    def retransmit(self, lost: list[int], budget: DownlinkBudget | None = None) -> None:
        """Answer a NACK (RFC 4585 §6.2.1) from the cache, as RTX if negotiated (RFC 4588).

        Each retransmission must fit the subscriber's RTX bucket (sfu/allocator.py): a
        subscriber on a congested link asks for more the more it loses, and answering
        all of it would only congest it further.
        """
        track, p, lane = self.track, self.params, self.lane
        if track is None or p is None or lane.pt < 0:
            return
        now = time.monotonic()
        simulcast = bool(track.layers)
        run: Run | None = None
        for out_seq in lost[:64]:
            seq = lane.sent_as(out_seq)
            source, ts_offset, picture_offset, tl0_offset = track, lane.ts_offset, 0, 0
            if simulcast:  # which layer it came from, and that run's offsets
                run = self._run_of(out_seq)
                if run is None:
                    self.stats.add("nack_misses")
                    continue
                source, ts_offset = run.layer, run.ts_offset
                picture_offset, tl0_offset = run.picture_offset, run.tl0_offset
                if seq < 0:  # a hole of the layer's, filled since or being repaired
                    seq = self._in_seq(run, out_seq)
            elif seq < 0 and lane.started:
                # Never sent as out_seq: a hole of the publisher's (filled since, or being
                # repaired upstream), at the place the run's mapping puts it.
                seq = (out_seq + lane.seq_offset) & 0xFFFF
                if seq_newer(lane.resume_seq, seq) or seq_newer(seq, lane.last_in_seq):
                    seq = -1
            cached = source.cached(seq) if seq >= 0 else None
            if cached is None:
                nacks = source.nacks
                if seq >= 0 and nacks is not None and nacks.is_missing(seq):
                    self.stats.add("nack_pending")  # the repair will be forwarded anyway
                else:
                    self.stats.add("nack_misses")
                continue
            data, h = cached
            payload = data[h.payload_offset : h.payload_end]
            dropped = False
            if simulcast and run is not None:
                offsets = run.offsets(seq, payload)
                if offsets is None:
                    self.stats.add("nack_misses")
                    continue
                picture_offset, dropped = offsets[1], offsets[2]
            if budget is not None and not budget.take_rtx(len(data), now):
                self.stats.drop("rtx_budget")
                continue
            out_ts = (h.timestamp + ts_offset) & 0xFFFFFFFF
            exts = h.extensions
            level = exts.get(track._level_id) if track._level_id else None
            ext = self._extensions(level if level is not None and len(level) == 1 else None,
                                   abs_send_time(now) if track._ast_id in exts else None)
            if dropped:
                # a picture the temporal filter dropped: what went out was padding
                payload = b""
                self.stats.add("temporal_padding")
            elif simulcast:
                payload = rewrite_descriptor(payload, picture_offset, tl0_offset)
            pt, ssrc, seq = lane.pt, p.ssrc, out_seq
            if p.rtx_payload_type is not None:
                # RFC 4588 §4: RTX payload = original sequence number + original payload
                # (none for padding: the receiver restores an empty packet, padding)
                payload = struct.pack("!H", out_seq) + payload
                pt, ssrc = p.rtx_payload_type, p.rtx_ssrc
                self._rtx_seq = seq = (self._rtx_seq + 1) & 0xFFFF
            elif dropped:
                payload = PAD_ONE
            # else: no RTX negotiated, resend the packet as it was
            packet = build_packet(payload_type=pt, sequence_number=seq, timestamp=out_ts,
                                  ssrc=ssrc, marker=h.marker and not dropped, extensions=ext,
                                  payload=payload, csrcs=h.csrcs)
            if dropped and p.rtx_payload_type is None:
                packet = bytes([packet[0] | PADDING_BIT]) + packet[1:]
            if self._sub.send_rtp(packet):
                self.stats.add("rtx_sent")
                self.rtx_octets += len(packet)

    def pad(self, count: int, size: int, now: float) -> int:
        """Send ``count`` padding-only packets of ``size`` bytes of padding on this slot's
        RTX stream (a bandwidth probe, sfu/allocator.py); returns the bytes sent.

        RFC 3550 §5.1: P set, the last padding octet counts the padding; RFC 4588 §4
        lets an RTX stream carry such packets. They carry our MID and abs-send-time, so
        the subscriber's estimator counts them with the media.
        """
        p, lane = self.params, self.lane
        if p is None or p.rtx_payload_type is None or not self._sub.up:
            return 0
        size = max(1, min(size, 255))
        padding = bytes(size - 1) + bytes([size])
        ext = self._extensions(None, abs_send_time(now))
        sent = 0
        for _ in range(count):
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            packet = _FIXED.pack(RTP_V2 | PADDING_BIT | (EXT_BIT if ext else 0),
                                 p.rtx_payload_type, self._rtx_seq, lane.last_out_ts,
                                 p.rtx_ssrc) + ext + padding
            if not self._sub.send_rtp(packet):
                break
            sent += len(packet)
        return sent

    def translate_sr(self, sr: rtcp.SenderReport) -> bytes | None:
        """The publisher's SR, restated in this slot's SSRC and timestamp space."""
        lane = self.lane
        if not lane.started or not self.ready or self.params is None:
            return None
        return bytes(rtcp.SenderReport(self.params.ssrc, sr.ntp,
                                       (sr.rtp_timestamp + lane.ts_offset) & 0xFFFFFFFF,
                                       lane.packets, lane.octets))
