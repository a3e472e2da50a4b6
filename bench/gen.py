"""The load generator: many virtual participants in one process, driven over stdin/stdout.

Handshakes are real: for an SFU each participant has aiortc PeerConnections (the SFU's
own ``RawPeer``, so aiortc never encodes or decodes) that do ICE and DTLS-SRTP with the
server. Once a PeerConnection is up, the generator takes its packets over (docs/BENCHMARKS.md,
Method): it replaces the ICE socket's ``datagram_received`` so that SRTP
(RFC 7983 §7) goes straight to libsrtp and a counter (compiled: ``bench/_receive.c``),
while SRTCP (key-frame requests), STUN (ICE consent, RFC 7675) and DTLS still reach
Python and aioice/aiortc; and it sends by protecting
pre-shaped RTP with the same libsrtp session and writing it to the nominated pair's
socket, from a pacing thread of its own (``Pacer``). No aiortc code runs per packet.

Control protocol (one JSON object per line): the generator prints ``{"ev": "published"}``
when its publishers are connected, then waits for ``{"op": "subscribe"}``, prints
``{"ev": "connected"}``, waits for ``{"op": "start"}``, starts media and prints
``{"ev": "flowing", "missing": k}`` once every participant hears what it should (or after
a bounded wait). Then ``{"op": "window", "id", "start", "end"}`` (CLOCK_MONOTONIC ns)
opens a tally of packets *sent* in [start, end); ``{"op": "report", "id"}`` returns it;
``{"op": "rate", "x"}`` scales every stream's packet rate; ``{"op": "stop"}`` ends.

Latency is measured to the moment a packet reached the receiving socket, by the kernel's
receive timestamp (``bench/_receive.c``), not to the moment this process got round to
reading it: one process plays up to 50 receivers on one core, and its own queue is not
latency the system under test added. The user-space figure is kept beside it
(``hist_user``).

Uplink loss (``--uplink-loss SHARE``, ``UplinkLoss``): each video stream deliberately does
not send a share of its packets (a seeded PRNG per stream, so a run is repeatable), keeps
what it sent and withheld in a bounded cache, and answers the server's generic NACKs
(RFC 4585 §6.2.1) on its publishing transport with RTX (RFC 4588) when the m-line
negotiated it, else with the packet again. A withheld packet's probe carries a stream id
of its own (``Scenario.withheld_base``), so the receivers count the copies the server
repaired apart from everything else; the window reports what was withheld, NACKed and
retransmitted beside it, each by the original packet's send time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import heapq
import json
import logging
import os
import random
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pylibsrtp

from peers.mediabot import TEMPORAL  # L1T3's TID per frame, as SimulcastBot sends it
from sfu import rtcp
from sfu.srtp import Protector

from ._receive import Counts, Endpoint
from .media import (
    MAGIC,
    PROBE,
    StreamSpec,
    frame_payloads,
    packetize_vp8,
    rtp_header,
    rtx_packet,
)
from .scenarios import Member, Scenario, build

logger = logging.getLogger("bench.gen")

RR_EMPTY = struct.Struct("!BBHI")  # RFC 3550 §6.4.2 receiver report with RC = 0

# How long the event loop's thread may keep the GIL while the pacer waits for it
# (Python's default is 5 ms, which would show up as send lateness).
SWITCH_INTERVAL = 0.0005
BATCH = 0.001  # the pacer wakes at most this late, for several streams at once

Send = Callable[[bytes], None]

# Uplink loss: packets kept per video stream to answer NACKs from (the SFU keeps as many,
# sfu/config.py ``rtx_cache``): 8.5 s of a meeting's video, 2.8 s of a broadcast's
CACHE = 512
MAX_NACKED = 256  # sequence numbers answered per NACK packet, at most (the rest: counted)
# A kept packet: (sequence number, send time in monotonic ns, plaintext RTP, withheld?)
Kept = tuple[int, int, bytes, bool]


class Window:
    """The send side of a window: what the pacer sent in [start, end) and how late.

    The receive side (pairs, latency histograms, unprobed) is counted in C by
    ``Counts`` under the same id and merged in ``to_json``.
    """

    def __init__(self, wid: int, start: int, end: int) -> None:
        self.id = wid
        self.start = start
        self.end = end
        self.sent: dict[int, int] = {}
        self.lag_max = 0.0
        self.late = 0
        self.ticks = 0
        # uplink loss, per stream id, by the original packet's send time: "withheld" and
        # "resent" are written by the pacer's thread, "nacked" by the loop's (one writer each)
        self.uplink: dict[str, dict[int, int]] = {"withheld": {}, "nacked": {}, "resent": {}}

    def to_json(self, received: dict[str, Any]) -> dict[str, Any]:
        """This window with ``received``, what ``Counts.take`` returned for it."""
        pairs: dict[int, int] = received["pairs"]
        per_stream: dict[int, int] = {}
        for key, count in pairs.items():
            per_stream[key & 0xFFFF] = per_stream.get(key & 0xFFFF, 0) + count
        return {
            "id": self.id, "start": self.start, "end": self.end,
            "sent": self.sent, "received": per_stream, "pairs": pairs,
            "hist": received["hist"], "hist_user": received["hist_user"],
            "unprobed": received["unprobed"],
            "lag_max_ms": round(self.lag_max * 1000, 3), "late": self.late, "ticks": self.ticks,
            **self.uplink,
        }


class Tally:
    """Counters shared by every participant of this process.

    ``counts`` (C, bench/_receive.c) is what the receivers heard; ``windows`` is what the
    pacer sent, and is read by the pacer's thread: replace the list, never mutate it.
    """

    def __init__(self, receivers: int, streams: int) -> None:
        self.counts = Counts(receivers, streams)
        self.windows: list[Window] = []
        self.rtcp = 0
        self.srtcp_errors = 0  # SRTCP libsrtp refused (SRTP's are counted in ``counts``)
        self.send_errors = 0  # a full socket send buffer (the pacer does not queue)
        self.plis = 0
        # uplink loss (loop's thread): NACK packets, sequence numbers they asked for, those
        # not in the cache (or of an unknown SSRC), and those of packets we had sent
        self.nacks = 0
        self.nacked = 0
        self.nack_misses = 0
        self.nacked_not_withheld = 0
        self.rtcp_malformed = 0
        self.sockets: list[socket.socket] = []  # the pacer's duplicates, closed at the end
        self.endpoints: list[Endpoint] = []  # their stamp sockets, closed at the end

    def open(self, wid: int, start: int, end: int) -> None:
        self.counts.open(wid, start, end)
        self.windows = [*self.windows, Window(wid, start, end)]

    def take(self, wid: int) -> dict[str, Any] | None:
        """Close window ``wid``; its JSON form, or None if it is not open."""
        w = next((w for w in self.windows if w.id == wid), None)
        self.windows = [x for x in self.windows if x is not w]
        received = self.counts.take(wid)
        return None if w is None or received is None else w.to_json(received)

    def endpoint(self, sock: Any, receiver: int, other: Callable[[bytes, Any], None] | None,
                 rx: Protector | None = None) -> Endpoint:
        """A ``datagram_received`` for ``receiver``'s socket (plaintext without ``rx``)."""
        if rx is None:
            e = Endpoint(self.counts, receiver, sock.fileno(), other)
        else:
            native = rx.native("srtp_unprotect")
            if native is None:
                raise RuntimeError("bench: pylibsrtp internals not as expected (sfu/srtp.py); "
                                   "the generator's compiled receive path needs them")
            e = Endpoint(self.counts, receiver, sock.fileno(), other, native[0], native[1],
                         rx.session)
        self.endpoints.append(e)
        return e

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for e in self.endpoints:
            e.close()

    def on_sent(self, sid: int, sent: int, count: int) -> None:
        for w in self.windows:
            if w.start <= sent < w.end:
                w.sent[sid] = w.sent.get(sid, 0) + count
                return

    def on_uplink(self, what: str, sid: int, sent: int, count: int = 1) -> None:
        """Count ``what`` ("withheld", "nacked", "resent") of packets sent at ``sent``."""
        for w in self.windows:
            if w.start <= sent < w.end:
                d = w.uplink[what]
                d[sid] = d.get(sid, 0) + count
                return

    def uplink_totals(self) -> dict[str, int]:
        """The loop thread's NACK counters, for the runner's report."""
        return {"nacks": self.nacks, "nacked": self.nacked, "nack_misses": self.nack_misses,
                "nacked_not_withheld": self.nacked_not_withheld,
                "rtcp_malformed": self.rtcp_malformed}

    def on_lag(self, sent: int, lag: float) -> None:
        for w in self.windows:
            if w.start <= sent < w.end:
                w.ticks += 1
                if lag > w.lag_max:
                    w.lag_max = lag
                if lag > 0.005:
                    w.late += 1
                return


class Counted(asyncio.DatagramProtocol):
    """A plain receiving socket whose datagrams go straight to a compiled ``Endpoint``."""

    def __init__(self, endpoint: Endpoint) -> None:
        # uvloop looks datagram_received up on each datagram: an instance attribute that
        # is the Endpoint itself puts no Python frame between the socket and C
        self.datagram_received = endpoint  # type: ignore[method-assign,assignment]


@dataclass(frozen=True)
class UplinkLoss:
    """``--uplink-loss``: the share of video packets not sent, the PRNG seed, and the probe
    stream-id offset of withheld packets (``Scenario.withheld_base``)."""

    share: float
    seed: int
    base: int


class Uplink:
    """One video stream's uplink loss: which packets to withhold, and the NACK cache.

    The pacer's thread draws, keeps and retransmits; the loop's thread only looks entries
    up (``lookup``): a list slot holds an immutable tuple, and reading or replacing a slot
    is atomic under the GIL, so the two threads need no lock.
    """

    __slots__ = ("cache", "rng", "rtx_pt", "rtx_seq", "rtx_ssrc", "shadow", "share")

    def __init__(self, loss: UplinkLoss, sid: int) -> None:
        self.share = loss.share
        # one PRNG per stream, seeded by (seed, stream id): the same packets are withheld in
        # every run and every system, however the streams interleave
        self.rng = random.Random(loss.seed * 1_000_003 + sid)
        self.shadow = sid + loss.base  # the probe stream id of this stream's withheld packets
        self.cache: list[Kept | None] = [None] * CACHE
        self.rtx_pt: int | None = None  # set from the answer (bench/rtc.py); None: plain resend
        self.rtx_ssrc = 0
        self.rtx_seq = random.getrandbits(16)  # RFC 4588 §4: the RTX stream's own sequence

    def withhold(self, n: int) -> list[bool]:
        """Which of a frame's ``n`` packets not to send: one draw per packet, always, so the
        pattern depends on (seed, stream, packet index) only, not on timing."""
        draw, share = self.rng.random, self.share
        return [draw() < share for _ in range(n)]

    def keep(self, seq: int, sent: int, packet: bytes, withheld: bool) -> None:
        # Per packet on the pacer's thread, so a ring indexed by sequence number: one slot
        # store, no eviction pass, bounded by construction (a newer packet overwrites the
        # one CACHE sequence numbers older; ``lookup`` checks the number it finds)
        self.cache[seq % CACHE] = (seq, sent, packet, withheld)

    def lookup(self, seq: int) -> Kept | None:
        """The kept packet with sequence number ``seq``, if the cache still has it."""
        kept = self.cache[seq % CACHE]
        return kept if kept is not None and kept[0] == seq else None

    def repair(self, kept: Kept) -> bytes:
        """What answers a NACK for ``kept``: RFC 4588 §4 RTX (original sequence number +
        payload, on the RTX SSRC and payload type, the RTX stream's next sequence number)
        if the m-line negotiated RTX, else the original packet again (RFC 4585 §6.2.1 asks
        for the packet; the SRTP session allows a repeated send, aiortc's
        ``allow_repeat_tx``)."""
        if self.rtx_pt is None:
            return kept[2]
        self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
        return rtx_packet(kept[2], self.rtx_pt, self.rtx_seq, self.rtx_ssrc)


class OutStream:
    """One paced stream of pre-shaped packets (video frames or audio packets)."""

    def __init__(self, sid: int, spec: StreamSpec, tally: Tally) -> None:
        self.sid = sid
        self.spec = spec
        self.tally = tally
        self.pt = 96 if spec.kind == "video" else 111
        self.ssrc = random.getrandbits(32)
        self.ext = b""
        self.send: Send | None = None
        self.seq = random.getrandbits(16)
        self.ts = random.getrandbits(32)
        self.count = 0
        self.picture_id = random.getrandbits(15)
        # Key-frame requests: the loop's thread counts them up (on_pub_rtcp), the pacer's
        # thread serves up to the count it read. A flag set by one thread and cleared by
        # the other could lose a request that landed between the pacer's read and clear.
        self.key_requests = 1  # the first frame is a key frame
        self.key_served = 0
        self.scale = 1.0
        self._tsstep = int((90000 if spec.kind == "video" else 48000) / spec.rate)
        self.real: list[bytes] | None = None  # real encoded frames (for decoding systems)
        self._real_next = 0
        self.uplink: Uplink | None = None  # --uplink-loss (video streams only)
        # A simulcast layer (spec.rid): L1T3 VP8 descriptors (RFC 7741 §4.2) as Chromium
        # sends them, the TID of frame k of a run being TEMPORAL[k % 4], TL0PICIDX counting
        # the TID-0 frames, a key frame starting the pattern again. ``ext`` (MID and RID,
        # set by bench/rtc.py) rides on the layer's packets until a report block names its
        # SSRC (``acknowledge``), then ``ext_acked``: libwebrtc stops sending them so.
        self.layered = spec.rid is not None
        self.tl0 = random.getrandbits(8)
        self.frames = 0
        self.ext_acked = b""
        self.acked = False

    def first_due(self, now: float) -> float:
        return now + random.random() / self.spec.rate  # stagger streams

    def fire(self, due: float, now: float) -> float:
        """Send the frame that fell due at ``due`` (it is ``now``, time.monotonic());
        return when the next one is due. Runs on the pacer's thread."""
        lag = now - due
        period = 1.0 / (self.spec.rate * self.scale)
        following = due + period
        if following < now - 10 * period:  # far behind: do not burst, resynchronise
            following = now + period
        send = self.send
        if send is None:
            return following
        sent = time.monotonic_ns()
        n = self.spec.packets_per_frame()
        uplink = self.uplink
        # The hot path branches once per frame on ``uplink``: without --uplink-loss the
        # per-packet work (probe, header, send) is what it was, no draw, no cache
        if uplink is None:
            probes = [PROBE.pack(MAGIC, self.sid, (self.count + i) & 0xFFFFFFFF, sent)
                      for i in range(n)]
        else:  # withheld packets carry their own probe stream id (Scenario.withheld_base)
            withheld = uplink.withhold(n)
            probes = [PROBE.pack(MAGIC, uplink.shadow if withheld[i] else self.sid,
                                 (self.count + i) & 0xFFFFFFFF, sent) for i in range(n)]
        self.count += n
        requests = self.key_requests  # read once: the loop's thread may add more
        key = requests != self.key_served and self.spec.kind == "video"
        self.key_served = requests
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        self.ts = (self.ts + self._tsstep) & 0xFFFFFFFF
        if self.layered:
            if key:
                self.frames = 0  # L1T3 restarts at a key frame
            tid = TEMPORAL[self.frames % len(TEMPORAL)]
            if tid == 0:
                self.tl0 = (self.tl0 + 1) & 0xFF
            self.frames += 1
            payloads = frame_payloads(self.spec, key, self.picture_id, probes, self.tl0, tid)
        elif self.real is None:
            payloads = frame_payloads(self.spec, key, self.picture_id, probes)
        else:  # real media: no probe inside (the system re-encodes it anyway)
            payloads = self._real_payloads(key)
            n = len(payloads)
        last = len(payloads) - 1
        if uplink is None:
            for i, payload in enumerate(payloads):
                self.seq = (self.seq + 1) & 0xFFFF
                send(rtp_header(self.pt, self.seq, self.ts, self.ssrc,
                                i == last and self.spec.kind == "video", self.ext) + payload)
        else:
            n -= self._send_some(send, payloads, withheld, sent, uplink)
        self.tally.on_sent(self.sid, sent, n)
        self.tally.on_lag(sent, lag)
        return following

    def acknowledge(self) -> None:
        """A receiver report named this stream's SSRC: a layer stops sending MID and RID
        (on the loop's thread; the pacer reads ``ext`` once per packet)."""
        if self.layered and not self.acked:
            self.acked = True
            self.ext = self.ext_acked

    def _send_some(self, send: Send, payloads: list[bytes], withheld: list[bool], sent: int,
                   uplink: Uplink) -> int:
        """Send a frame's packets but the withheld ones, keeping every one for NACKs (the
        withheld ones still take their sequence number: that is the hole the server sees).
        Returns how many were withheld."""
        last = len(payloads) - 1
        dropped = 0
        for i, payload in enumerate(payloads):
            self.seq = (self.seq + 1) & 0xFFFF
            # only video streams withhold: the marker ends the frame (RFC 7741 §4.1)
            packet = rtp_header(self.pt, self.seq, self.ts, self.ssrc, i == last, self.ext) + \
                payload
            uplink.keep(self.seq, sent, packet, withheld[i])
            if withheld[i]:
                dropped += 1
            else:
                send(packet)
        if dropped:
            self.tally.on_uplink("withheld", self.sid, sent, dropped)
        return dropped

    def resend(self, kept: Kept) -> None:
        """Answer a NACK for ``kept`` (on the pacer's thread: it alone protects with this
        transport's SRTP session, whose pylibsrtp buffer is not thread-safe)."""
        uplink, send = self.uplink, self.send
        if uplink is None or send is None:
            return
        send(uplink.repair(kept))
        self.tally.on_uplink("resent", self.sid, kept[1])

    def _real_payloads(self, key: bool) -> list[bytes]:
        real = self.real
        assert real is not None
        if self.spec.kind == "audio":
            self._real_next = (self._real_next + 1) % len(real)
            return [real[self._real_next]]
        if key or self._real_next == 0:
            self._real_next = 0
        frame = real[self._real_next]
        self._real_next = self._real_next % (len(real) - 1) + 1  # frame 0 is the key frame
        return packetize_vp8(frame, self.picture_id)


class Pacer:
    """Sends every stream's frames when they fall due, from a thread of its own.

    Why a thread: the event loop's thread unprotects and counts every packet of every
    receiver; at 40 000 pkt/s it is 60–90 % busy and handles datagrams in batches of
    milliseconds, so timers on that loop fired up to ~30 ms late. A late sender then
    sends every frame that fell due meanwhile at once, a burst that 20 independent
    clients would not make together, and the server's queue for it showed up as p99.
    This thread sleeps until the next due time and only needs the GIL to run (the
    switch interval is lowered while it runs). It touches nothing the loop's thread
    uses per packet: the publishing SRTP sessions (the loop only unprotects, and sends
    RTCP on the receiving sessions) and duplicated sockets (uvloop's transports are
    not thread-safe). Bounded: it stops when ``stop`` is called, and is a daemon.

    With uplink loss (``repair``) it also sends the retransmissions the loop's thread
    queues (``resend``), for the same reason: only this thread protects with the
    publishing sessions. A queued retransmission wakes it at once (``_wake``); without
    uplink loss ``_wake`` is ``_stop`` and the loop is the one it always was.
    """

    def __init__(self, streams: list[OutStream], repair: bool = False) -> None:
        self.streams = streams
        self._stop = threading.Event()
        self._wake = threading.Event() if repair else self._stop
        # (stream, kept packet) to retransmit: appended by the loop's thread, popped here
        # (deque's append and popleft are atomic)
        self.resends: collections.deque[tuple[OutStream, Kept]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="bench-pacer", daemon=True)
        self._interval = sys.getswitchinterval()
        self.started = False

    def start(self) -> None:
        """Start the thread (once; a second call does nothing)."""
        if self.started:
            return
        self.started = True
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()

    def resend(self, stream: OutStream, kept: Kept) -> None:
        """Queue a retransmission (loop's thread) and wake the pacer for it."""
        self.resends.append((stream, kept))
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        sys.setswitchinterval(self._interval)

    def _run(self) -> None:
        now = time.monotonic()
        due = [(s.first_due(now), i, s) for i, s in enumerate(self.streams)]
        heapq.heapify(due)
        stop, wake, resends = self._stop, self._wake, self.resends
        try:
            while due and not stop.is_set():
                if resends:  # NACKed packets first: each one is a hole at the server now
                    for _ in range(len(resends)):  # bounded: what was queued by now
                        again, kept = resends.popleft()
                        again.resend(kept)
                when, i, stream = due[0]
                now = time.monotonic()
                if when > now:
                    # sleep a little past the due time so that one wake-up serves every
                    # stream due meanwhile: each wake-up costs a GIL hand-over. A queued
                    # retransmission ends the sleep early; clearing the event before the
                    # queue is drained (above, next turn) loses no wake-up
                    if wake.wait(when - now + BATCH) and wake is not stop:
                        wake.clear()
                    continue
                heapq.heapreplace(due, (stream.fire(when, now), i, stream))
        except Exception:  # the runner sees the silence as loss; say why here
            logger.exception("pacer stopped")


def raw_send(sock: socket.socket, addr: Any, tally: Tally,
             protect: Callable[[bytes], bytes] | None = None) -> Send:
    """A Send for the pacer's thread: straight to the socket, never through the event
    loop. A full send buffer loses the packet (counted), as it would on a real host."""
    sendto = sock.sendto

    def send(packet: bytes) -> None:
        try:
            sendto(packet if protect is None else protect(packet), addr)
        except OSError:
            tally.send_errors += 1

    return send


class Participant:
    """One virtual participant: its streams and what it has heard."""

    def __init__(self, member: Member, tally: Tally, loss: UplinkLoss | None = None) -> None:
        self.member = member
        self.index = member.index
        self.pid = f"p{member.index}"
        self.tally = tally
        self.streams = [OutStream(sid, spec, tally) for sid, spec in member.streams()]
        if loss is not None and loss.share > 0:
            for s in self.streams:
                if s.spec.kind == "video":  # only video is repaired by NACK (RFC 4585 §6.2.1)
                    s.uplink = Uplink(loss, s.sid)
        # where NACKed packets go to be retransmitted (the Pacer's ``resend``)
        self.resend: Callable[[OutStream, Kept], None] | None = None

    @property
    def seen(self) -> set[int]:
        """Stream ids heard, and -1 if media without a probe was heard."""
        return self.tally.counts.seen(self.index)

    def on_pub_rtcp(self, packet: bytes) -> None:
        """RTCP from the server on our publishing transport: key-frame requests matter,
        and, for simulcast layers, the report blocks that acknowledge an SSRC."""
        pos = 0
        while pos + 4 <= len(packet):
            pt = packet[pos + 1]
            fmt = packet[pos] & 0x1F
            length = 4 * (struct.unpack_from("!H", packet, pos + 2)[0] + 1)
            if pt == 206 and fmt in (1, 4):  # RFC 4585 §6.3.1 PLI, RFC 5104 §4.3.1 FIR
                self.tally.plis += 1
                # the SSRC asked for: PLI's media source (RFC 4585 §6.1), FIR's FCI entry
                # (RFC 5104 §4.3.1.1, the media source field is 0); a layer makes a key
                # frame only when it is named, as libwebrtc's simulcast encoders do
                at = pos + (8 if fmt == 1 else 12)
                named = int.from_bytes(packet[at : at + 4], "big") \
                    if at + 4 <= min(len(packet), pos + length) else None
                video = [s for s in self.streams if s.spec.kind == "video"]
                for s in [s for s in video if s.ssrc == named] or \
                        [s for s in video if not s.layered]:
                    s.key_requests += 1
            elif pt in (200, 201):  # RFC 3550 §6.4.1 SR, §6.4.2 RR: report blocks
                first = pos + (28 if pt == 200 else 8)
                for k in range(fmt):  # RC report blocks of 24 bytes, SSRC first
                    at = first + 24 * k
                    if at + 4 > min(len(packet), pos + length):
                        break
                    ssrc = int.from_bytes(packet[at : at + 4], "big")
                    for s in self.streams:
                        if s.ssrc == ssrc:
                            s.acknowledge()
            pos += length
        if self.resend is not None:  # uplink loss: answer the server's NACKs
            self.on_nacks(packet)

    def on_nacks(self, packet: bytes) -> None:
        """Generic NACKs (RFC 4585 §6.2.1) in an RTCP compound from the server: count each
        sequence number asked for, and queue the kept packet for the pacer to resend."""
        try:
            parsed = rtcp.parse_compound(packet)
        except ValueError:
            self.tally.rtcp_malformed += 1
            return
        tally, resend = self.tally, self.resend
        if resend is None:
            return
        by_ssrc = {s.ssrc: s for s in self.streams if s.uplink is not None}
        for p in parsed:
            if not isinstance(p, rtcp.Nack):
                continue
            tally.nacks += 1
            stream = by_ssrc.get(p.media_ssrc)  # the NACK names the media SSRC, not RTX's
            tally.nacked += len(p.lost)
            for k, seq in enumerate(p.lost):
                kept = None
                if stream is not None and stream.uplink is not None and k < MAX_NACKED:
                    kept = stream.uplink.lookup(seq)
                if stream is None or kept is None:
                    tally.nack_misses += 1
                    continue
                tally.on_uplink("nacked", stream.sid, kept[1])
                if not kept[3]:  # a packet we did send: lost on the way, or asked early
                    tally.nacked_not_withheld += 1
                resend(stream, kept)


def take_over(peer: Any, receiver: int, on_rtcp: Callable[[bytes], None] | None,
              tally: Tally) -> tuple[Send, Send]:
    """Route a connected RawPeer's SRTP past aiortc; return (send RTP, send RTCP)."""
    dtls = peer._dtls
    pair = dtls.transport._connection._nominated[1]
    proto = pair.protocol
    original = proto.datagram_received
    rx = Protector(dtls._rx_srtp)  # the SFU's lean libsrtp calls (sfu/srtp.py)
    tx = Protector(dtls._tx_srtp)
    transport = proto.transport
    addr = pair.remote_addr
    sock = transport.get_extra_info("socket")
    out = socket.socket(fileno=os.dup(sock.fileno()))  # for the pacer's thread (raw_send)
    tally.sockets.append(out)

    def other(data: bytes, src: Any) -> None:
        """What the compiled endpoint does not count: SRTCP, STUN and DTLS."""
        if data and 127 < data[0] < 192:  # RFC 7983 §7: SRTCP (RTP stays in C)
            tally.rtcp += 1
            try:
                packet = rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                tally.srtcp_errors += 1
                return
            if on_rtcp is not None:
                on_rtcp(packet)
        else:  # STUN (consent freshness) and DTLS stay with aioice / aiortc
            original(data, src)

    # uvloop looks the method up on each datagram; RTP never reaches Python from here on
    proto.datagram_received = tally.endpoint(sock, receiver, other, rx)

    def send_rtcp(packet: bytes) -> None:  # on the loop's thread (keep-alive RRs)
        transport.sendto(tx.protect_rtcp(packet), addr)

    return raw_send(out, addr, tally, tx.protect), send_rtcp


class Generator:
    """The virtual participants of one process and the control loop."""

    def __init__(self, scenario: Scenario, indices: list[int], backend: Any,
                 loss: UplinkLoss | None = None) -> None:
        self.scenario = scenario
        if getattr(backend, "reencodes", False):
            loss = None  # no probes survive a re-encode: nothing to count a repair by
        self.loss = loss
        # stream ids: bench/scenarios.py; with uplink loss twice as many probe ids, the
        # second half for withheld packets (Scenario.withheld_base)
        self.tally = Tally(scenario.total, (2 if loss else 1) * scenario.withheld_base)
        self.participants = [Participant(scenario.members[i], self.tally, loss)
                             for i in indices]
        self.backend = backend
        self.pacer = Pacer([s for p in self.participants for s in p.streams],
                           repair=loss is not None)
        if loss is not None:
            for p in self.participants:
                p.resend = self.pacer.resend
        self._rr_task: asyncio.Future[None] | None = None
        self._closed = False

    def emit(self, **msg: Any) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def run(self, reader: asyncio.StreamReader) -> None:
        # RRs from the start: a connected participant that holds its media back until the
        # whole room is in is still alive (docs/SFU.md "Join storms")
        self._rr_task = asyncio.ensure_future(self._keepalive())
        if self.scenario.name == "joinstorm":
            # browsers send media as soon as they are connected: the pacer sends each
            # stream from the moment its transport is taken over (OutStream.send)
            self.pacer.start()
        await self.backend.publish(self.participants)
        storm = getattr(self.backend, "storm", None)
        self.emit(ev="published", **({} if storm is None else {"storm": storm}))
        await self._expect(reader, "subscribe")
        await self.backend.subscribe(self.participants)
        figures = getattr(self.backend, "setup_figures", None)
        self.emit(ev="connected", **({} if figures is None else {"setup": figures()}))
        await self._expect(reader, "start")
        # The packet loop makes no reference cycles; a full collection over aiortc's
        # objects would stall the loop for up to hundreds of ms and show up as latency.
        gc.collect()
        gc.freeze()
        gc.disable()
        self.pacer.start()
        missing = await self._wait_flowing(20.0 + 0.5 * self.scenario.total)
        self.emit(ev="flowing", missing=missing)
        layered = [s for p in self.participants for s in p.streams if s.layered]
        while True:
            line = await reader.readline()
            if not line:
                break
            msg = json.loads(line)
            op = msg.get("op")
            if op == "window":
                self.tally.open(msg["id"], msg["start"], msg["end"])
            elif op == "report":
                self.emit(ev="report", window=self.tally.take(msg["id"]),
                          unknown=self.tally.counts.unknown, rtcp=self.tally.rtcp,
                          srtp_errors=self.tally.counts.srtp_errors + self.tally.srtcp_errors,
                          send_errors=self.tally.send_errors, plis=self.tally.plis,
                          # simulcast: layers whose SSRC a report block named by now (they
                          # stopped sending MID + RID), of all layers
                          **({"layers_acked": [sum(s.acked for s in layered), len(layered)]}
                             if layered else {}),
                          **({} if self.loss is None else {"uplink": self.uplink_report()}))
            elif op == "rate":
                for p in self.participants:
                    for s in p.streams:
                        s.scale = float(msg["x"])
            elif op == "stop":
                break
        await self.close()
        self.emit(ev="stopped")

    def uplink_report(self) -> dict[str, Any]:
        """The NACK counters so far, and how many video streams answer with RTX (the
        m-line negotiated it) or with the packet again."""
        streams = [s for p in self.participants for s in p.streams if s.uplink is not None]
        return {**self.tally.uplink_totals(),
                "rtx_streams": sum(1 for s in streams if s.uplink and s.uplink.rtx_pt is not None),
                "plain_streams": sum(1 for s in streams if s.uplink and s.uplink.rtx_pt is None)}

    async def _expect(self, reader: asyncio.StreamReader, op: str) -> None:
        line = await reader.readline()
        if not line or json.loads(line).get("op") != op:
            raise SystemExit(f"bench.gen: expected {op!r}, got {line[:80]!r}")

    async def _wait_flowing(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        reencodes = getattr(self.backend, "reencodes", False)
        while True:
            if reencodes:  # no probes survive a re-encode: anything heard will do
                missing = sum(1 for p in self.participants
                              if self.scenario.expected_sources(p.index) and -1 not in p.seen)
            else:
                missing = sum(len(self.scenario.expected_sources(p.index) - p.seen)
                              for p in self.participants)
            if missing == 0 or time.monotonic() > deadline:
                return missing
            await asyncio.sleep(0.1)

    async def _keepalive(self) -> None:
        """An empty RR per second on every receiving transport, and on the publishing ones
        until the pacer sends their media: the SFU's liveness check."""
        while True:
            await asyncio.sleep(1.0)
            self.backend.keepalive(self.participants, pub=not self.pacer.started)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        gc.enable()
        self.pacer.stop()
        if self._rr_task is not None:
            self._rr_task.cancel()
            await asyncio.gather(self._rr_task, return_exceptions=True)
        await self.backend.close()
        self.tally.close()


def make_backend(args: argparse.Namespace, scenario: Scenario) -> Any:
    if args.system == "reflector":
        from .reflector import ReflectorClient
        return ReflectorClient(args.host, args.port)
    if args.system == "sealroom":
        from .sealroom_client import SealroomClient
        return SealroomClient(args.host, args.port, args.bind, scenario, args.join_within)
    if args.system == "mediarelay":
        from .sealroom_client import MediaRelayClient
        return MediaRelayClient(args.host, args.port, args.bind, scenario)
    if args.system == "janus":
        from .janus import JanusClient
        return JanusClient(args.host, args.port, args.bind, scenario)
    raise SystemExit(f"bench.gen: unknown system {args.system!r}")


async def main_async(args: argparse.Namespace) -> None:
    scenario = build(args.scenario, args.participants, args.last_n, args.rooms)
    indices = [int(x) for x in args.indices.split(",")] if args.indices else list(
        range(scenario.total))
    loss = UplinkLoss(args.uplink_loss, args.loss_seed, scenario.withheld_base) \
        if args.uplink_loss > 0 else None
    gen = Generator(scenario, indices, make_backend(args, scenario), loss)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await gen.run(reader)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(gen.close(), 10.0)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gen")
    p.add_argument("--system", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--participants", type=int, required=True, help="per room")
    p.add_argument("--rooms", type=int, default=1)
    p.add_argument("--last-n", type=int, default=4)
    p.add_argument("--indices", default="", help="comma-separated participant indices")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bind", default="127.0.0.1", help="address for our ICE candidates")
    p.add_argument("--uplink-loss", type=float, default=0.0,
                   help="share of its video packets each publisher does not send")
    p.add_argument("--loss-seed", type=int, default=1, help="seed of the withholding PRNG")
    p.add_argument("--join-within", type=float, default=2.0,
                   help="joinstorm: every participant joins within this many seconds")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="gen %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
