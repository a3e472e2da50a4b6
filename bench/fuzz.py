"""Hostile media traffic: fuzzed RTP/RTCP inside valid SRTP, into a live SFU with a call.

``python -m bench.fuzz --packets 1000000`` starts the SFU in its own process (``serve``
below: ``sfu.Sfu`` behind ``bench.control``, as ``bench.sfu_runner``, plus per-datagram
totals in its ``stats``), a meeting of ``--participants`` generated participants
(``bench.gen``, real ICE/DTLS-SRTP peers, measured as in docs/BENCHMARKS.md "Method"),
measures ``--windows`` windows of the call alone, then joins one more participant, the
**fuzzer**, which publishes audio and video (with RTX) and subscribes like anybody else,
and sends ``--packets`` mutated packets at ``--rate`` per second through its own SRTP
sessions, so that they pass SRTP authentication and reach the SFU's parsers. Windows with
and without fuzz alternate, so that both see the same machine. At the end it reads the
SFU's counters and checks that every fuzzed datagram is accounted for (``account``).
Bounded: the packet count, and ``--max-seconds`` for the fuzzing phase. The results and
what they found: docs/BENCHMARKS.md "Hostile media traffic".

What is sent (``Mutator``): valid RTP/RTCP of the kinds a participant sends (Opus with
the RFC 6464 level, VP8 with its RFC 7741 descriptor and abs-send-time, RTX per RFC 4588,
SR/RR/SDES/BYE on the pub PC; RR, PLI, FIR, NACK, REMB and compounds on the sub PC,
about the SSRCs the SFU really sends us), each passed through one mutation (``RTP_MUTATIONS``,
``RTCP_MUTATIONS``: bit flips, truncation, lying CSRC counts, extension and element
lengths, padding, payload types, sequence jumps, other participants' SSRCs, truncated
VP8 descriptors, abs-send-time and level garbage, short RTX, wrong RTCP lengths and
counts, unknown types, odd feedback sizes, random bytes). Three things are held fixed so
that the packets reach the parsers rather than libsrtp's checks:

* the first octet stays 128..191 (RFC 7983 §7: anything else is not SRTP and goes to
  aioice's STUN parser or to DTLS, never to the RTP/RTCP parsers);
* the SSRC (RTP octets 8..11, RTCP 4..7) is one of a fixed pool (ours, the ones the SFU
  sends us, 16 random ones): libsrtp keeps a stream for every SSRC that authenticates,
  so random SSRCs would measure libsrtp's memory, not the parsers (docs/BENCHMARKS.md,
  "Hostile media traffic", "Found, not fixed");
* each RTP packet gets the next sequence number of its SSRC unless the mutation is the
  sequence jump, so libsrtp's replay window (RFC 3711 §3.3.2) passes it.

A mutated packet libsrtp refuses to protect (a header that lies about its own length:
``srtp_protect`` validates the CSRC count and extension length) is sent as it is with a
random 10-byte "tag": the SFU's ``srtp_unprotect`` must refuse it (``drop_srtp_rejected``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pylibsrtp
from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.sdp import SessionDescription

from peers.sfupeer import SfuPeer
from sfu import rtcp
from sfu.ice import IcePolicy
from sfu.peer import Negotiated, RawPeer, negotiated
from sfu.rtp import build_extensions, build_packet
from sfu.vp8 import build_descriptor

logger = logging.getLogger("bench.fuzz")

CODECS = {"audio": "opus", "video": "vp8"}
MAX_PACKET = 1200  # plaintext bytes: room for SRTP's trailer in libsrtp's 1500-byte buffer
RANDOM_SSRCS = 16
BATCH_INTERVAL = 0.005  # seconds between two bursts of the sending loop
BURST_INTERVALS = 4  # a burst sends at most this many intervals' worth of packets

# Counters of sfu.Stats that end the handling of one SRTP/SRTCP datagram handed to the
# SFU's handlers (sfu/participant.py): exactly one of them per datagram. Their sum over a
# run equals the datagrams the SFU's peers took in (``srtp_in`` in ``serve``'s stats).
OUTCOMES = (
    "received_packets", "drop_malformed_rtp", "drop_unknown_ssrc", "drop_unexpected_pt",
    "rtx_received", "drop_rtx_padding", "drop_rtp_on_sub",
    "rtcp_received", "drop_malformed_rtcp", "drop_handler_error",
)


def outcome_total(stats: dict[str, int]) -> int:
    return sum(int(stats.get(k, 0)) for k in OUTCOMES)


# --- the fuzzing participant ----------------------------------------------------------------


class FuzzPeer(SfuPeer):
    """A participant that publishes audio+video (+RTX), subscribes, and sends raw datagrams.

    Its handlers are plain functions, so ``RawPeer`` takes the socket over once DTLS is up
    (sfu/peer.py "fast path") and ``send`` can protect with the same libsrtp sessions.
    """

    def __init__(self, pid: str, ice: IcePolicy | None = None) -> None:
        super().__init__(pid)
        self.ice = ice or IcePolicy("127.0.0.1")
        self.counters: Counter[str] = Counter()
        self.pub = RawPeer(self.ice, self._count("pub_rtp_in"), self._count("pub_rtcp_in"))
        self.sub = RawPeer(self.ice, self._count("sub_rtp_in"), self._count("sub_rtcp_in"))
        self.params: dict[str, Negotiated] = {}  # kind -> our published m-line
        self.sub_ssrcs: list[int] = []  # what the SFU sends us (other participants' streams)
        self.errors: list[dict[str, Any]] = []
        # --sink (the control run): every packet is made and protected as usual but sent
        # to a socket nobody reads, so the call sees this process's own cost and no SFU work
        self.sink: socket.socket | None = None
        self.sink_addr: tuple[str, int] = ("127.0.0.1", 0)
        self.kept_alive = 0.0
        self.keepalives = 0  # those receiver reports, the only datagrams the SFU gets

    def _count(self, name: str) -> Callable[[bytes], None]:
        counters = self.counters

        def handler(data: bytes) -> None:
            counters[name] += 1

        return handler

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "sfu-answer" and msg.get("pc") == "pub":
            await self.pub.pc.setRemoteDescription(
                RTCSessionDescription(sdp=msg["sdp"], type="answer"))
            self.pub.adopt()
            transceivers: list[Any] = self.pub.pc.getTransceivers()
            for t in transceivers:
                self.params[t.kind] = negotiated(t)
        elif kind == "sfu-offer" and msg.get("pc") == "sub":
            pc = self.sub.pc
            parsed = SessionDescription.parse(msg["sdp"])
            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            self.sub.adopt()
            await pc.setLocalDescription(await pc.createAnswer())
            self.sub.adopt()
            self.sub_ssrcs = sorted({int(s.ssrc) for m in parsed.media for s in m.ssrc})
            await self._emit({"type": "sfu-answer", "pc": "sub", "sdp": pc.localDescription.sdp})
        elif kind == "sfu-error":
            self.errors.append(msg)

    async def publish(self) -> None:
        """Offer sendonly audio and video (VP8 with RTX), as a browser does."""
        pc = self.pub.pc
        for kind in ("audio", "video"):
            t = pc.addTransceiver(kind, direction="sendonly")
            caps = RTCRtpSender.getCapabilities(kind).codecs
            t.setCodecPreferences([c for c in caps if c.mimeType.lower() in
                                   (f"{kind}/{CODECS[kind]}", f"{kind}/rtx")])
        self.pub.adopt()
        await pc.setLocalDescription(await pc.createOffer())
        self.pub.adopt()
        await self._emit({"type": "sfu-offer", "pc": "pub", "sdp": pc.localDescription.sdp})

    async def connected(self, timeout: float) -> bool:
        """Both PCs up and taken over, our m-lines negotiated (polls every 50 ms)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.pub._fast is not None and self.sub._fast is not None
                    and len(self.params) == 2 and self.sub_ssrcs):
                return True
            await asyncio.sleep(0.05)
        return False

    def send(self, pc: str, data: bytes, rng: random.Random) -> bool:
        """Protect ``data`` with the PC's SRTP session and send it; if libsrtp will not
        protect it, send it unprotected with a random tag. True if it was protected."""
        peer = self.pub if pc == "pub" else self.sub
        fast = peer._fast
        if fast is None:
            raise RuntimeError("fuzz peer: transport not up")
        if fast.nominated.get(1) is not fast.pair:
            fast.repoint()
        try:
            if len(data) < 12:
                raise pylibsrtp.Error("shorter than an RTP header")  # libsrtp's own check
            # the SFU tells RTP from RTCP by the packet type octet (RFC 5761 §4): so do we
            out = fast.protect_rtcp(data) if 191 < data[1] < 224 else fast.protect(data)
            protected = True
        except pylibsrtp.Error:
            # at least 12 bytes, or the SFU's demux (RFC 7983 §7) would not call it SRTP
            out = data + rng.randbytes(max(10, 12 - len(data)))
            protected = False
        if self.sink is not None:
            self.sink.sendto(out, self.sink_addr)
            now, sub = time.monotonic(), self.sub._fast
            if now - self.kept_alive >= 1.0 and sub is not None:
                # a receiver report a second, as a receive-only participant sends: the
                # SFU's idle clock (docs/SFU.md "Faults") would drop a silent one
                self.kept_alive = now
                self.keepalives += 1
                report = bytes(rtcp.ReceiverReport(self.params["video"].ssrc, []))
                sub.sendto(sub.protect_rtcp(report), sub.addr)
        else:
            fast.sendto(out, fast.addr)
        return protected

    def open_sink(self) -> None:
        """Send from now on to a socket of our own on loopback that is never read (the
        kernel drops what overflows its buffer): ``--sink``."""
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setblocking(False)
        self.sink.bind(("127.0.0.1", 0))
        self.sink_addr = self.sink.getsockname()

    async def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        await self._stop_work(5.0)
        for peer in (self.pub, self.sub):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), 5.0)


# --- the mutations --------------------------------------------------------------------------


class Mutator:
    """Valid packets of every kind a participant sends, each passed through one mutation."""

    def __init__(self, peer: FuzzPeer, seed: int) -> None:
        self.rng = random.Random(seed)
        rng = self.rng
        a, v = peer.params["audio"], peer.params["video"]
        self.audio, self.video = a, v
        self.own = [a.ssrc, v.ssrc, v.rtx_ssrc]  # the SSRCs our offer declared
        self.others = list(peer.sub_ssrcs) or [rng.getrandbits(32)]
        self.randoms = [rng.getrandbits(32) for _ in range(RANDOM_SSRCS)]
        self.pool = set(self.own) | set(self.others) | set(self.randoms)
        self._pool = sorted(self.pool)
        self.seq: dict[tuple[str, int], int] = {}  # (pc, ssrc) -> last sequence number
        self.picture_id = rng.getrandbits(15)
        self.ts = rng.getrandbits(32)
        self.counts: Counter[str] = Counter()  # mutation name -> packets

    # valid material ---------------------------------------------------------------------

    def _ext(self, p: Negotiated, extra: list[tuple[int, bytes]]) -> bytes:
        elements: list[tuple[int, bytes]] = []
        if p.mid_id is not None:
            elements.append((p.mid_id, p.mid.encode()))
        return build_extensions(elements + extra)

    def audio_packet(self) -> bytes:
        a, rng = self.audio, self.rng
        level = [(a.audio_level_id, bytes([rng.randrange(256)]))] if a.audio_level_id else []
        self.ts = (self.ts + 960) & 0xFFFFFFFF
        return build_packet(payload_type=a.payload_types["opus"], sequence_number=0,
                            timestamp=self.ts, ssrc=a.ssrc, marker=False,
                            extensions=self._ext(a, level),
                            payload=rng.randbytes(rng.randrange(1, 160)))

    def vp8_payload(self, key: bool) -> bytes:
        rng = self.rng
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        desc = build_descriptor(start=key or rng.random() < 0.5, picture_id=self.picture_id)
        if key:  # RFC 6386 §9.1: frame tag with P=0, start code, 14-bit width and height
            header = bytes([0x10, 0x02, 0x00]) + b"\x9d\x01\x2a" + rng.randbytes(4)
        else:
            header = bytes([0x11 | (rng.randrange(8) << 5), 0x00, 0x00])
        return desc + header + rng.randbytes(rng.randrange(0, 1000))

    def video_packet(self) -> bytes:
        v, rng = self.video, self.rng
        ast = [(v.abs_send_time_id, rng.randbytes(3))] if v.abs_send_time_id else []
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        return build_packet(payload_type=v.payload_types["vp8"], sequence_number=0,
                            timestamp=self.ts, ssrc=v.ssrc, marker=rng.random() < 0.5,
                            extensions=self._ext(v, ast),
                            payload=self.vp8_payload(rng.random() < 0.05))

    def rtx_packet(self) -> bytes:
        v, rng = self.video, self.rng
        pt = v.rtx_payload_type if v.rtx_payload_type is not None else 97
        if rng.random() < 0.3:  # a padding-only probe (RFC 3550 §5.1 P, RFC 4588 §4)
            pad = rng.randrange(1, 256)
            head = build_packet(payload_type=pt, sequence_number=0, timestamp=self.ts,
                                ssrc=v.rtx_ssrc, marker=False, extensions=self._ext(v, []),
                                payload=b"")
            return bytes([head[0] | 0x20]) + head[1:] + bytes(pad - 1) + bytes([pad])
        osn = struct.pack("!H", rng.getrandbits(16))
        return build_packet(payload_type=pt, sequence_number=0, timestamp=self.ts,
                            ssrc=v.rtx_ssrc, marker=False, extensions=self._ext(v, []),
                            payload=osn + self.vp8_payload(False)[: rng.randrange(0, 300)])

    def feedback(self) -> bytes:
        """One valid RTCP packet of a kind a subscriber sends, about a stream we receive."""
        rng = self.rng
        me = self.own[rng.randrange(2)]
        media = rng.choice(self.others)
        kind = rng.randrange(8)
        if kind == 0:
            return bytes(rtcp.Pli(me, media))
        if kind == 1:
            return bytes(rtcp.Fir(me, [(rng.choice(self.others), rng.randrange(256))
                                       for _ in range(rng.randrange(1, 4))]))
        if kind == 2:
            return bytes(rtcp.Nack(me, media, [rng.getrandbits(16)
                                               for _ in range(rng.randrange(1, 40))]))
        if kind == 3:
            return bytes(rtcp.Remb(me, rng.getrandbits(rng.randrange(1, 40)),
                                   rng.sample(self.others, min(len(self.others), 3))))
        if kind == 4:
            return bytes(rtcp.ReceiverReport(me, [self._block() for _ in range(rng.randrange(4))]))
        return self.report()

    def report(self) -> bytes:
        """SR, RR, SDES or BYE, as a publisher's RTCP carries them."""
        rng = self.rng
        me = rng.choice(self.own)
        kind = rng.randrange(4)
        if kind == 0:
            return bytes(rtcp.SenderReport(me, rtcp.ntp_now(time.time()), self.ts,
                                           rng.getrandbits(20), rng.getrandbits(28),
                                           [self._block() for _ in range(rng.randrange(3))]))
        if kind == 1:
            return bytes(rtcp.ReceiverReport(me, [self._block() for _ in range(rng.randrange(3))]))
        if kind == 2:  # RFC 3550 §6.5 SDES with one CNAME item
            cname = rng.randbytes(rng.randrange(1, 30))
            item = struct.pack("!IBB", me, 1, len(cname)) + cname + b"\x00"
            item += b"\x00" * (-len(item) % 4)
            return struct.pack("!BBH", 0x81, rtcp.SDES, len(item) // 4) + item
        return struct.pack("!BBHI", 0x81, rtcp.BYE, 1, me)  # RFC 3550 §6.6

    def _block(self) -> rtcp.ReportBlock:
        rng = self.rng
        return rtcp.ReportBlock(rng.choice(self.others), rng.randrange(256),
                                rng.randrange(-(1 << 23), 1 << 23), rng.getrandbits(32),
                                rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(32))

    # one packet -------------------------------------------------------------------------

    def next(self) -> tuple[str, bytes, str]:
        """(pc, plaintext, mutation): the next packet to send."""
        rng = self.rng
        r = rng.random()
        if r < 0.45:  # RTP to the pub PC: the publisher's media
            base = rng.random()
            if base < 0.3:
                data = self.audio_packet()
            elif base < 0.85:
                data = self.video_packet()
            else:
                data = self.rtx_packet()
            name, mutate = rng.choice(RTP_MUTATIONS)
            return "pub", self._finish_rtp("pub", mutate(self, data), name), name
        if r < 0.5:  # RTP to the sub PC, which receives nothing
            name, mutate = rng.choice(RTP_MUTATIONS)
            return "sub", self._finish_rtp("sub", mutate(self, self.audio_packet()), name), name
        pc = "pub" if r < 0.6 else "sub"
        if pc == "pub":
            packets = [self.report() for _ in range(rng.randrange(1, 3))]
        else:
            packets = [self.feedback() for _ in range(rng.randrange(1, 4))]
        if rng.random() < 0.3:
            packets.insert(0, self.report())  # RFC 3550 §6.1: a compound starts with SR/RR
        name, mutate_rtcp = rng.choice(RTCP_MUTATIONS)
        self.counts[name] += 1
        return pc, self._finish_rtcp(mutate_rtcp(self, packets)), name

    def _finish_rtp(self, pc: str, data: bytes, name: str) -> bytes:
        data = _srtp_first_octet(data[:MAX_PACKET], self.rng)
        if len(data) < 12:
            self.counts[name] += 1
            return data
        out = bytearray(data)
        ssrc = int.from_bytes(out[8:12], "big")
        if ssrc not in self.pool:
            ssrc = self._pool[ssrc % len(self._pool)]
            out[8:12] = ssrc.to_bytes(4, "big")
        key = (pc, ssrc)
        last = self.seq.get(key, self.rng.getrandbits(16))
        if name == "seq_jump":
            jump = self.rng.choice((2, 3, 17, 255, 256, 257, 1000, 20000, 32767, 32768,
                                    40000, 65535, self.rng.getrandbits(16)))
            seq = (last + jump) & 0xFFFF
            if 0 < jump < 0x8000:
                self.seq[key] = seq
        else:
            seq = self.seq[key] = (last + 1) & 0xFFFF
        out[2:4] = seq.to_bytes(2, "big")
        if 191 < out[1] < 224:  # M=1 and PT 72..76: the SFU takes it for RTCP (RFC 5761 §4)
            ssrc = int.from_bytes(out[4:8], "big")  # and libsrtp reads its SSRC here
            if ssrc not in self.pool:
                out[4:8] = self._pool[ssrc % len(self._pool)].to_bytes(4, "big")
        self.counts[name] += 1
        return bytes(out)

    def _finish_rtcp(self, data: bytes) -> bytes:
        data = _srtp_first_octet(data[:MAX_PACKET], self.rng)
        if len(data) >= 8:
            ssrc = int.from_bytes(data[4:8], "big")
            if ssrc not in self.pool:
                data = data[:4] + self._pool[ssrc % len(self._pool)].to_bytes(4, "big") + \
                    data[8:]
        if len(data) >= 2 and not 191 < data[1] < 224:
            data = data[:1] + bytes([192 + data[1] % 32]) + data[2:]  # stays RTCP
        return data


def _srtp_first_octet(data: bytes, rng: random.Random) -> bytes:
    """RFC 7983 §7: SRTP/SRTCP starts with 128..191 (V=2); keep the other six bits."""
    if not data:
        return bytes([0x80 | rng.getrandbits(6)])
    return bytes([0x80 | (data[0] & 0x3F)]) + data[1:]


# RTP mutations: (name, f(mutator, valid packet) -> packet) --------------------------------


def _header_end(data: bytes) -> int:
    """Where the payload of a valid packet of ours starts (fixed + CSRCs + extension)."""
    pos = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10 and len(data) >= pos + 4:
        pos += 4 + 4 * struct.unpack_from("!H", data, pos + 2)[0]
    return min(pos, len(data))


def m_none(m: Mutator, d: bytes) -> bytes:
    return d


def m_bitflip(m: Mutator, d: bytes) -> bytes:
    out = bytearray(d)
    for _ in range(m.rng.randrange(1, 9)):
        i = m.rng.randrange(len(out))
        if i in (2, 3, 8, 9, 10, 11):  # sequence number and SSRC have mutations of their own
            continue
        out[i] ^= 1 << m.rng.randrange(6 if i == 0 else 8)
    return bytes(out)


def m_truncate(m: Mutator, d: bytes) -> bytes:
    return d[: m.rng.randrange(0, len(d) + 1)]


def m_extend(m: Mutator, d: bytes) -> bytes:
    return d + m.rng.randbytes(m.rng.randrange(1, 64))


def m_csrc_count(m: Mutator, d: bytes) -> bytes:
    return bytes([(d[0] & 0xF0) | m.rng.randrange(1, 16)]) + d[1:]


def m_csrcs(m: Mutator, d: bytes) -> bytes:
    """Real CSRCs (other participants' SSRCs among them), the count telling the truth."""
    n = m.rng.randrange(1, 16)
    csrcs = b"".join(m.rng.choice(m._pool).to_bytes(4, "big") for _ in range(n))
    cc = d[0] & 0x0F
    return bytes([(d[0] & 0xF0) | n]) + d[1:12] + csrcs + d[12 + 4 * cc:]


def m_ext_length(m: Mutator, d: bytes) -> bytes:
    """X set and an extension length that lies (too long, too short, zero, huge)."""
    rng = m.rng
    out = bytearray(d)
    out[0] |= 0x10
    pos = 12 + 4 * (out[0] & 0x0F)
    if len(out) < pos + 4:
        return bytes(out) + b"\xbe\xde" + rng.randbytes(2)
    words = rng.choice((0, 1, 2, 0x7FFF, 0xFFFF, rng.getrandbits(16),
                        (len(out) - pos) // 4, (len(out) - pos) // 4 + 1))
    out[pos + 2 : pos + 4] = words.to_bytes(2, "big")
    return bytes(out)


def m_ext_elements(m: Mutator, d: bytes) -> bytes:
    """A well-sized extension block whose RFC 8285 elements lie (overrun, id 15, 2-byte)."""
    rng = m.rng
    profile = rng.choice((b"\xbe\xde", b"\x10\x00", b"\x10\x0f", rng.randbytes(2)))
    body = bytearray()
    for _ in range(rng.randrange(1, 6)):
        if profile == b"\xbe\xde":
            body.append((rng.randrange(16) << 4) | rng.randrange(16))
        else:
            body += bytes([rng.randrange(256), rng.randrange(256)])
        body += rng.randbytes(rng.randrange(0, 6))
    body += b"\x00" * (-len(body) % 4)
    cc = d[0] & 0x0F
    start = 12 + 4 * cc
    rest = d[_header_end(d):]
    return (bytes([d[0] | 0x10]) + d[1:start] + profile + struct.pack("!H", len(body) // 4)
            + bytes(body) + rest)


def m_padding(m: Mutator, d: bytes) -> bytes:
    """P set with a padding count of zero, too large, exactly the packet, or random."""
    rng = m.rng
    pad = rng.choice((0, 1, 255, len(d), len(d) + 1, len(d) - 12, rng.randrange(256)))
    return bytes([d[0] | 0x20]) + d[1:-1] + bytes([pad & 0xFF])


def m_pt(m: Mutator, d: bytes) -> bytes:
    """Another payload type, the RTCP-colliding 72..76 among them (RFC 5761 §4)."""
    pt = m.rng.choice((0, 8, 72, 73, 76, 96, 97, 98, 100, 111, 127, m.rng.randrange(128)))
    return d[:1] + bytes([(d[1] & 0x80) | pt]) + d[2:]


def m_seq_jump(m: Mutator, d: bytes) -> bytes:
    return d  # the jump is applied by Mutator._finish_rtp, which owns the counters


def m_ssrc(m: Mutator, d: bytes) -> bytes:
    """Another participant's SSRC (one the SFU sends us), ours swapped, or a random one."""
    ssrc = m.rng.choice((m.rng.choice(m.others), m.rng.choice(m.own), m.rng.choice(m.randoms)))
    return d[:8] + ssrc.to_bytes(4, "big") + d[12:]


def m_vp8_truncated(m: Mutator, d: bytes) -> bytes:
    """A video packet whose VP8 descriptor (RFC 7741 §4.2) stops short: X, I, M, L, T/K
    announced, then the payload ends."""
    rng = m.rng
    v = m.video
    first = 0x80 | 0x10 | rng.choice((0, 0, 1, 7))  # X, S, PID
    desc = bytes([first, rng.choice((0x80, 0xC0, 0xF0, 0x40, 0x30, 0xFF))])
    desc += bytes([rng.choice((0x80, 0x7F, 0xFF))]) + rng.randbytes(3)
    payload = desc[: rng.randrange(0, len(desc) + 1)]
    if rng.random() < 0.3:  # or a complete descriptor, then a cut key-frame header
        payload = build_descriptor(start=True, picture_id=1) + \
            (bytes([0x10, 0, 0]) + b"\x9d\x01\x2a")[: rng.randrange(0, 7)]
    return build_packet(payload_type=v.payload_types["vp8"], sequence_number=0,
                        timestamp=m.ts, ssrc=v.ssrc, marker=True,
                        extensions=m._ext(v, []), payload=payload)


def m_ast_garbage(m: Mutator, d: bytes) -> bytes:
    """abs-send-time (and the audio level) with the wrong size, in either RFC 8285 form."""
    rng = m.rng
    v = m.video if rng.random() < 0.6 else m.audio
    ident = (v.abs_send_time_id if v is m.video else v.audio_level_id) or rng.randrange(1, 15)
    value = rng.randbytes(rng.choice((0, 1, 2, 4, 7, 16, 17, 40)))
    if 1 <= len(value) <= 16 and rng.random() < 0.5:
        ext = build_extensions([(ident, value)] + ([(v.mid_id, v.mid.encode())]
                                                   if v.mid_id else []))
    else:  # two-byte form (RFC 8285 §4.3), which allows 0 and > 16 bytes
        body = bytes([ident, len(value)]) + value
        body += b"\x00" * (-len(body) % 4)
        ext = b"\x10\x00" + struct.pack("!H", len(body) // 4) + body
    pt = v.payload_types["vp8" if v is m.video else "opus"]
    payload = m.vp8_payload(rng.random() < 0.2) if v is m.video else rng.randbytes(40)
    return build_packet(payload_type=pt, sequence_number=0, timestamp=m.ts, ssrc=v.ssrc,
                        marker=False, extensions=ext, payload=payload)


def m_rtx_short(m: Mutator, d: bytes) -> bytes:
    """RTX (RFC 4588 §4) with 0 or 1 payload bytes, just the OSN, or padding eating it."""
    rng = m.rng
    v = m.video
    pt = v.rtx_payload_type if v.rtx_payload_type is not None else 97
    payload = rng.randbytes(rng.choice((0, 1, 2, 3)))
    packet = build_packet(payload_type=pt, sequence_number=0, timestamp=m.ts,
                          ssrc=v.rtx_ssrc, marker=False, extensions=m._ext(v, []),
                          payload=payload)
    if rng.random() < 0.3 and payload:
        packet = bytes([packet[0] | 0x20]) + packet[1:-1] + bytes([len(payload)])
    return packet


def m_random(m: Mutator, d: bytes) -> bytes:
    return m.rng.randbytes(m.rng.randrange(0, MAX_PACKET))


RTP_MUTATIONS: list[tuple[str, Callable[[Mutator, bytes], bytes]]] = [
    ("valid", m_none), ("bitflip", m_bitflip), ("truncate", m_truncate),
    ("extend", m_extend), ("csrc_count", m_csrc_count), ("csrcs", m_csrcs),
    ("ext_length", m_ext_length), ("ext_elements", m_ext_elements),
    ("padding", m_padding), ("payload_type", m_pt), ("seq_jump", m_seq_jump),
    ("ssrc", m_ssrc), ("vp8_truncated", m_vp8_truncated), ("ext_garbage", m_ast_garbage),
    ("rtx_short", m_rtx_short), ("random", m_random),
]


# RTCP mutations: (name, f(mutator, valid packets) -> datagram) ----------------------------


def r_none(m: Mutator, ps: list[bytes]) -> bytes:
    return b"".join(ps)


def r_bitflip(m: Mutator, ps: list[bytes]) -> bytes:
    out = bytearray(b"".join(ps))
    for _ in range(m.rng.randrange(1, 9)):
        i = m.rng.randrange(len(out))
        if 4 <= i < 8:
            continue  # the sender SSRC: bounded to the pool (module docstring)
        out[i] ^= 1 << m.rng.randrange(6 if i == 0 else 8)
    return bytes(out)


def r_truncate(m: Mutator, ps: list[bytes]) -> bytes:
    d = b"".join(ps)
    return d[: m.rng.randrange(0, len(d))]


def r_length(m: Mutator, ps: list[bytes]) -> bytes:
    """One packet's length field lies (RFC 3550 §6.4.1: 32-bit words minus one)."""
    rng = m.rng
    i = rng.randrange(len(ps))
    p = bytearray(ps[i])
    true = len(p) // 4 - 1
    p[2:4] = rng.choice((0, true - 1 if true else 1, true + 1, true + 100, 0xFFFF,
                         rng.getrandbits(16))).to_bytes(2, "big")
    ps[i] = bytes(p)
    return b"".join(ps)


def r_count(m: Mutator, ps: list[bytes]) -> bytes:
    """RC / FMT set to anything up to 31: report counts that the body cannot hold."""
    i = m.rng.randrange(len(ps))
    p = ps[i]
    ps[i] = bytes([(p[0] & 0xE0) | m.rng.choice((31, 30, 2, 15, m.rng.randrange(32)))]) + p[1:]
    return b"".join(ps)


def r_padding(m: Mutator, ps: list[bytes]) -> bytes:
    """P set on one packet with a padding count that is zero, too large or random."""
    rng = m.rng
    i = rng.randrange(len(ps))
    p = ps[i]
    ps[i] = bytes([p[0] | 0x20]) + p[1:-1] + bytes([rng.choice((0, 4, 255, len(p), len(p) - 4,
                                                                  rng.randrange(256))) & 0xFF])
    return b"".join(ps)


def r_unknown_type(m: Mutator, ps: list[bytes]) -> bytes:
    """A packet type nobody handles (RTCP's range 192..223 minus the known ones, XR, APP)."""
    rng = m.rng
    i = rng.randrange(len(ps))
    p = ps[i]
    ps[i] = p[:1] + bytes([rng.choice((192, 193, 195, 204, 207, 208, 210, 223))]) + p[2:]
    return b"".join(ps)


def r_odd_feedback(m: Mutator, ps: list[bytes]) -> bytes:
    """PLI/NACK/FIR/REMB/SR/RR whose bodies are cut or grown off their natural sizes."""
    rng = m.rng
    me, media = m.own[1], rng.choice(m.others)
    kind = rng.randrange(7)
    extra = rng.randbytes(rng.choice((0, 1, 2, 3, 4, 5, 7, 8, 12, 100)))
    if kind == 0:  # PLI with an FCI it must not have
        body = struct.pack("!II", me, media) + extra
        fmt, pt = rtcp.FMT_PLI, rtcp.PSFB
    elif kind == 1:  # NACK with a ragged FCI
        body = struct.pack("!II", me, media) + extra
        fmt, pt = rtcp.FMT_NACK, rtcp.RTPFB
    elif kind == 2:  # FIR whose FCI is not a multiple of 8
        body = struct.pack("!II", me, 0) + struct.pack("!I", media) + extra
        fmt, pt = rtcp.FMT_FIR, rtcp.PSFB
    elif kind == 3:  # REMB whose SSRC count, exponent and mantissa lie
        n = rng.choice((0, 1, 255, rng.randrange(256)))
        body = struct.pack("!II", me, 0) + b"REMB" + bytes([n, rng.randrange(256),
                                                            rng.randrange(256),
                                                            rng.randrange(256)])
        body += struct.pack("!I", media) * rng.randrange(0, 4) + extra
        fmt, pt = rtcp.FMT_AFB, rtcp.PSFB
    elif kind == 4:  # SR with a report count its body does not hold
        body = struct.pack("!IQIII", me, 0, 0, 0, 0) + extra
        fmt, pt = rng.choice((1, 31)), rtcp.SR
    elif kind == 5:  # RR with a huge report count
        body = struct.pack("!I", me) + bytes(rtcp.ReportBlock(media))[: rng.randrange(25)]
        body += extra
        fmt, pt = 31, rtcp.RR
    else:  # feedback with no media SSRC at all
        body = struct.pack("!I", me)[: rng.randrange(5)]
        fmt, pt = rng.randrange(32), rng.choice((rtcp.RTPFB, rtcp.PSFB))
    body += b"\x00" * (-len(body) % 4) if rng.random() < 0.7 else b""
    words = (len(body) + 3) // 4
    ps.insert(rng.randrange(len(ps) + 1), struct.pack("!BBH", 0x80 | fmt, pt, words) + body)
    return b"".join(ps)


def r_random(m: Mutator, ps: list[bytes]) -> bytes:
    d = m.rng.randbytes(m.rng.randrange(0, 400))
    return d[:1] + bytes([200 + m.rng.randrange(8)]) + d[2:] if len(d) > 1 else d


RTCP_MUTATIONS: list[tuple[str, Callable[[Mutator, list[bytes]], bytes]]] = [
    ("rtcp_valid", r_none), ("rtcp_bitflip", r_bitflip), ("rtcp_truncate", r_truncate),
    ("rtcp_length", r_length), ("rtcp_count", r_count), ("rtcp_padding", r_padding),
    ("rtcp_unknown_type", r_unknown_type), ("rtcp_odd_feedback", r_odd_feedback),
    ("rtcp_random", r_random),
]


# --- sending --------------------------------------------------------------------------------


class FuzzRun:
    """What was sent: per PC, protected or not, per mutation."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()  # "pub"/"sub" -> datagrams
        self.protected: Counter[str] = Counter()
        self.seconds = 0.0

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def to_json(self, mutator: Mutator) -> dict[str, Any]:
        return {"sent": dict(self.sent), "protected": dict(self.protected),
                "unprotected": {pc: self.sent[pc] - self.protected[pc] for pc in self.sent},
                "total": self.total, "seconds": round(self.seconds, 1),
                "mutations": dict(sorted(mutator.counts.items()))}


async def fuzz(peer: FuzzPeer, mutator: Mutator, packets: int, rate: float,
               max_seconds: float, run: FuzzRun | None = None) -> FuzzRun:
    """Send ``packets`` more mutated packets (counted in ``run``) at ``rate`` per second
    at most, for at most ``max_seconds``.

    Bursts every ``BATCH_INTERVAL`` keep the rate without a timer per packet. A burst is
    at most ``BURST_INTERVALS`` intervals' worth: when this process falls behind (making
    a packet costs ~0.1 ms of Python) it sends less, never a catch-up burst that would
    hold its event loop (and its ICE consent checks, RFC 7675) for long.
    """
    run = run or FuzzRun()
    start = time.monotonic()
    deadline = start + max_seconds
    first = run.total
    goal = first + packets
    burst = max(1, int(rate * BATCH_INTERVAL * BURST_INTERVALS))
    rng = mutator.rng
    send = peer.send
    while run.total < goal:
        now = time.monotonic()
        if now > deadline:
            break
        due = min(goal, first + int((now - start) * rate) + 1) - run.total
        for _ in range(min(due, burst)):
            pc, data, _name = mutator.next()
            if send(pc, data, rng):
                run.protected[pc] += 1
            run.sent[pc] += 1
        await asyncio.sleep(BATCH_INTERVAL)
    run.seconds += time.monotonic() - start
    return run


# --- the SFU process ------------------------------------------------------------------------


class CountingPlane:
    """``sfu.Sfu`` for ``bench.control`` with per-datagram totals in ``stats``:

    ``srtp_in``: SRTP/SRTCP datagrams the SFU's peers took in (``RawPeer.received``, handed
    to a handler, plus ``srtp_rejected`` and ``rate_limited``), summed over the
    participants; ``handed_in``: those handed to a handler; and the same for each
    participant whose id starts with ``fuzz`` (``fuzz.<pid>.<pc>_received`` / ``_rejected``
    / ``_limited``).
    """

    def __init__(self, sfu: Any) -> None:
        self.sfu = sfu

    async def join(self, room: str, pid: str, send: Any) -> None:
        await self.sfu.join(room, pid, send)

    async def handle(self, pid: str, msg: dict[str, Any]) -> None:
        await self.sfu.handle(pid, msg)

    async def leave(self, pid: str) -> None:
        await self.sfu.leave(pid)

    async def close(self) -> None:
        await self.sfu.close()

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = dict(self.sfu.stats())
        out.update(datagrams(self.sfu))
        out["udp_rcvbuf_drops"] = udp_drops()
        out["participants"] = len(self.sfu.participants)
        return out


def udp_drops() -> int:
    """Datagrams the kernel dropped for full receive buffers in this network namespace."""
    from .procstat import udp_drops as of_pid

    return of_pid(os.getpid())


def datagrams(sfu: Any) -> dict[str, int]:
    """``CountingPlane``'s per-datagram totals of an in-process ``Sfu``."""
    out = {"handed_in": 0, "srtp_in": 0}
    for pid, p in sfu.participants.items():
        for pc, peer in (("pub", p.pub), ("sub", p.sub)):
            out["handed_in"] += peer.received
            out["srtp_in"] += peer.received + peer.srtp_rejected + peer.rate_limited
            if pid.startswith("fuzz"):
                out[f"fuzz.{pid}.{pc}_received"] = peer.received
                out[f"fuzz.{pid}.{pc}_rejected"] = peer.srtp_rejected
                out[f"fuzz.{pid}.{pc}_limited"] = peer.rate_limited
    return out


async def serve_sfu(port: int, media_host: str, ingress_limit: bool = True) -> None:
    from sfu import Sfu, SfuConfig

    from . import control

    config = SfuConfig(bind_host=media_host)
    if not ingress_limit:  # every fuzzed datagram to libsrtp and the parsers
        config.max_pub_pps = config.max_sub_pps = 0
    await control.serve(CountingPlane(Sfu(config)), port)


# --- the control channel side of the fuzzing participant -----------------------------------


class ControlLink:
    """The fuzzer's signaling over ``bench.control`` (JSON lines on 127.0.0.1)."""

    def __init__(self, peer: FuzzPeer) -> None:
        self.peer = peer
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Future[None] | None = None

    async def join(self, port: int, room: str) -> None:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", port,
                                                                   limit=1 << 24)
        self._task = asyncio.ensure_future(self._read())
        self.peer.attach(self._send)
        self._writer.write((json.dumps({"op": "join", "pid": self.peer.pid, "room": room})
                            + "\n").encode())

    async def _send(self, msg: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write((json.dumps({"op": "msg", "pid": self.peer.pid, "msg": msg})
                            + "\n").encode())

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                return
            obj = json.loads(line)
            if obj.get("pid") == self.peer.pid:
                await self.peer.on_message(obj["msg"])

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.write((json.dumps({"op": "leave", "pid": self.peer.pid})
                                    + "\n").encode())
                await self._writer.drain()
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def account(before: dict[str, Any], after: dict[str, Any], pid: str,
            run: FuzzRun) -> dict[str, Any]:
    """Where the fuzzed datagrams went, from the SFU's counters before and after.

    ``fuzz_arrived``: datagrams of the fuzzer's two PCs the SFU took in (authenticated and
    handed to a handler, refused by libsrtp, or over the ingress limit), against
    ``run.total`` sent; what is missing must be among ``udp_rcvbuf_drops``, the datagrams
    the kernel dropped for a full socket buffer in the SFU's network namespace
    (the call's included);
    ``outcomes``: the sum of ``OUTCOMES`` against ``handed_in`` over the same interval,
    for the whole SFU (the call's packets included): equal when every datagram handed
    to a handler ended in exactly one named counter.
    """
    def delta(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    received = sum(delta(f"fuzz.{pid}.{pc}_received") for pc in ("pub", "sub"))
    rejected = sum(delta(f"fuzz.{pid}.{pc}_rejected") for pc in ("pub", "sub"))
    limited = sum(delta(f"fuzz.{pid}.{pc}_limited") for pc in ("pub", "sub"))
    drops = {k: delta(k) for k in sorted(set(after) | set(before))
             if k.startswith("drop_") and delta(k)}
    return {
        "fuzz_sent": run.total,
        "fuzz_arrived": received + rejected + limited,
        "fuzz_handed": received,
        "fuzz_srtp_rejected": rejected,
        "fuzz_rate_limited": limited,
        "outcomes": sum(delta(k) for k in OUTCOMES),
        "handed_in": delta("handed_in"),
        "handler_errors": delta("drop_handler_error"),
        "udp_rcvbuf_drops": delta("udp_rcvbuf_drops"),
        "drops": drops,
        "changed": {k: delta(k) for k in sorted(set(after) | set(before))
                    if isinstance(after.get(k, 0), int) and delta(k)},
        "counters": {k: delta(k) for k in ("received_packets", "rtx_received", "rtcp_received",
                                           "rtcp_ignored", "bad_audio_level", "sr_received",
                                           "rr_received", "pli_received", "fir_received",
                                           "nacks_received", "remb_received", "rtx_sent",
                                           "upstream_resets", "upstream_nacks_sent",
                                           "keyframe_requests", "plis_sent")},
    }


# --- the bench command ----------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from . import procstat
    from .run import PY as PYTHON
    from .run import (
        Options,
        SealroomServer,
        cores,
        measure_window,
        start_gens,
        stop_gens,
        summarize,
        wrap,
    )
    from .scenarios import build

    class FuzzServer(SealroomServer):
        async def start(self, scenario: Any, cpu: int | None) -> None:
            cmd = [PYTHON, "-m", "bench.fuzz", "serve", "--port", "0"]
            if args.no_ingress_limit:
                cmd.append("--no-ingress-limit")
            await self._spawn_json_port(wrap(cmd, cpu))

    from . import run as run_module

    opts = Options(windows=args.windows, window=args.window, warmup=args.warmup,
                   pin=not args.no_pin, nice=args.nice)
    run_module.NICE = args.nice  # wrap() puts the SFU and the generator under `nice -n`
    scenario = build("meeting", args.participants, 0, 1)
    server = FuzzServer()
    server_cpu, gen_cpu = cores(opts)
    result: dict[str, Any] = {"command": " ".join(sys.argv), "participants": args.participants,
                              "packets": args.packets, "rate": args.rate, "seed": args.seed,
                              "ingress_limit": not args.no_ingress_limit, "sink": args.sink}
    gens: list[Any] = []
    peer: FuzzPeer | None = None
    link: ControlLink | None = None
    affinity = os.sched_getaffinity(0)
    if gen_cpu is not None:
        os.sched_setaffinity(0, {gen_cpu})  # the fuzzer beside the generator, as run.py does
    setup = 60.0 + 2.0 * scenario.total
    try:
        await server.start(scenario, server_cpu)
        gens = await start_gens(server, scenario, opts, gen_cpu, setup)
        for g in gens:
            await g.expect("published", setup)
        for g in gens:
            g.send(op="subscribe")
        for g in gens:
            await g.expect("connected", setup)
        for g in gens:
            g.send(op="start")
        result["missing_streams"] = sum([(await g.expect("flowing", setup))["missing"]
                                         for g in gens])
        await asyncio.sleep(opts.warmup)
        base = [await measure_window(k, opts.window, server, gens, scenario, opts, 1.0)
                for k in range(opts.windows)]
        result["before_fuzzer"] = {**summarize(base), "loss_pooled": pooled_loss(base),
                                   "windows": base}
        if args.nice:
            os.nice(args.nice)  # this process, the fuzzer (its children have theirs)
        peer = FuzzPeer("fuzz0")
        link = ControlLink(peer)
        await link.join(server.port, scenario.room_name(0))
        await peer.publish()
        if not await peer.connected(30.0):
            raise RuntimeError("the fuzzing participant did not connect")
        await asyncio.sleep(args.warmup)  # the others' renegotiation for its tracks
        before = await server.counters()
        if args.sink:
            peer.open_sink()
        mutator = Mutator(peer, args.seed)
        run = FuzzRun()
        on: list[dict[str, Any]] = []
        off: list[dict[str, Any]] = []
        k = opts.windows
        deadline = time.monotonic() + args.max_seconds
        # Windows with and without fuzz alternate, so both see the same machine (other
        # programs, the hypervisor's steal): "unchanged" compares like with like.
        while run.total < args.packets and time.monotonic() < deadline:
            task = asyncio.ensure_future(fuzz(peer, mutator, args.packets - run.total,
                                              args.rate, opts.window, run))
            on.append(await measure_window(k, opts.window, server, gens, scenario, opts, 1.0))
            await task
            off.append(await measure_window(k + 1, opts.window, server, gens, scenario, opts,
                                            1.0))
            k += 2
            print(f"fuzz: {run.total} sent; with fuzz loss {on[-1]['loss']} p99 "
                  f"{on[-1]['p99_ms']} ms, without {off[-1]['loss']} {off[-1]['p99_ms']} ms",
                  file=sys.stderr, flush=True)
            if peer.pub._fast is None or peer.sub._fast is None:
                raise RuntimeError("the fuzzing participant's transport went down")
        after = await server.counters()
        result["with_fuzz"] = {**summarize(on), "loss_pooled": pooled_loss(on), "windows": on}
        result["without_fuzz"] = {**summarize(off), "loss_pooled": pooled_loss(off),
                                  "windows": off}
        result["fuzz"] = run.to_json(mutator)
        result["accounting"] = account(before, after, peer.pid, run)
        result["sfu_alive"] = server.proc is not None and server.proc.returncode is None
        result["participants_at_end"] = after.get("participants")
        result["server_rss_mb"] = procstat.tree_rss_bytes(server.pid) / 2**20
        result["fuzzer_errors"] = peer.errors
        result["sink_keepalives"] = peer.keepalives
    finally:
        if link is not None:
            await link.close()
        if peer is not None:
            await peer.close()
        await stop_gens(gens)
        if server.proc is not None:
            result["sfu_exit"] = server.proc.returncode
        await server.stop()
        os.sched_setaffinity(0, affinity)
    return result


def pooled_loss(windows: list[dict[str, Any]]) -> float | None:
    """Loss over all the windows together: lost / expected packets, not a median."""
    expected = sum(w["offered_pps"] * w["seconds"] for w in windows if w.get("loss") is not None)
    lost = sum(w["loss"] * w["offered_pps"] * w["seconds"] for w in windows
               if w.get("loss") is not None)
    return lost / expected if expected else None


def print_summary(r: dict[str, Any]) -> None:
    a = r.get("accounting", {})
    print(f"packets sent {r.get('fuzz', {}).get('total')} "
          f"(arrived {a.get('fuzz_arrived')}, handed to the parsers {a.get('fuzz_handed')}, "
          f"refused by SRTP {a.get('fuzz_srtp_rejected')}, over the ingress limit "
          f"{a.get('fuzz_rate_limited')}); outcomes {a.get('outcomes')} "
          f"of {a.get('handed_in')} handed in; handler errors {a.get('handler_errors')}; "
          f"SFU alive {r.get('sfu_alive')}")
    for name in ("before_fuzzer", "without_fuzz", "with_fuzz"):
        s = r.get(name, {})
        ws = s.get("windows", [])
        print(f"{name}: {len(ws)} windows, loss {s.get('loss_pooled')} (pooled), "
              f"p50 {s.get('p50_ms')} ms, p99 {s.get('p99_ms')} ms (medians), "
              f"forwarded {s.get('forwarded_pps')} pkt/s, "
              f"worst p99 {max((w['p99_ms'] or 0 for w in ws), default=None)} ms, "
              f"worst loss {max((w['loss'] or 0 for w in ws), default=None)}, "
              f"SFU loop stops >= 5 ms {sum(w.get('server_stops_5ms') or 0 for w in ws)}, "
              f"SFU CPU {s.get('server_cpu')}")
    print("drops:", json.dumps(a.get("drops", {}), sort_keys=True))


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.fuzz",
                                description="fuzzed RTP/RTCP in SRTP into a live SFU")
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="the SFU process (bench.control + datagram totals)")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--media-host", default="127.0.0.1")
    for q in (p, s):
        q.add_argument("--no-ingress-limit", action="store_true",
                       help="the SFU without its per-transport packet-rate limit "
                            "(max_pub_pps/max_sub_pps = 0): every datagram reaches libsrtp")
    p.add_argument("--sink", action="store_true",
                   help="the control run: the fuzzer makes and protects every packet but sends "
                        "it to a loopback socket of its own that nobody reads, not to the SFU")
    p.add_argument("--packets", type=int, default=1_000_000)
    p.add_argument("--rate", type=float, default=3000.0, help="fuzzed packets per second")
    p.add_argument("--participants", type=int, default=4, help="the call (meeting) size")
    p.add_argument("--windows", type=int, default=3, help="windows without fuzz")
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=2400.0,
                   help="the fuzzing phase stops after this long whatever was sent")
    p.add_argument("--nice", type=int, default=0,
                   help="niceness of the SFU, the generator and the fuzzer (negative: root; "
                        "on a machine shared with other benchmarks)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the SFU and the generator to one core each")
    p.add_argument("--json", default="", help="write the full result here")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    import uvloop

    if args.cmd == "serve":
        uvloop.run(serve_sfu(args.port, args.media_host, not args.no_ingress_limit))
        return
    result = uvloop.run(bench(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print_summary(result)


if __name__ == "__main__":
    main()
