"""The load generator: many virtual participants in one process, driven over stdin/stdout.

Handshakes are real: for an SFU each participant has aiortc PeerConnections (the SFU's
own ``RawPeer``, so aiortc never encodes or decodes) that do ICE and DTLS-SRTP with the
server. Once a PeerConnection is up, the generator takes its packets over (DESIGN.md
"lean raw-bytes path"): it replaces the ICE socket's ``datagram_received`` so that SRTP
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
"""

from __future__ import annotations

import argparse
import asyncio
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
from typing import Any

import pylibsrtp

from sfu.srtp import Protector

from ._receive import Counts, Endpoint
from .media import (
    MAGIC,
    PROBE,
    StreamSpec,
    frame_payloads,
    packetize_vp8,
    rtp_header,
)
from .scenarios import Member, Scenario, build

logger = logging.getLogger("bench.gen")

RR_EMPTY = struct.Struct("!BBHI")  # RFC 3550 §6.4.2 receiver report with RC = 0

# How long the event loop's thread may keep the GIL while the pacer waits for it
# (Python's default is 5 ms, which would show up as send lateness).
SWITCH_INTERVAL = 0.0005
BATCH = 0.001  # the pacer wakes at most this late, for several streams at once

Send = Callable[[bytes], None]


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
        probes = [PROBE.pack(MAGIC, self.sid, (self.count + i) & 0xFFFFFFFF, sent)
                  for i in range(n)]
        self.count += n
        requests = self.key_requests  # read once: the loop's thread may add more
        key = requests != self.key_served and self.spec.kind == "video"
        self.key_served = requests
        self.picture_id = (self.picture_id + 1) & 0x7FFF
        self.ts = (self.ts + self._tsstep) & 0xFFFFFFFF
        if self.real is None:
            payloads = frame_payloads(self.spec, key, self.picture_id, probes)
        else:  # real media: no probe inside (the system re-encodes it anyway)
            payloads = self._real_payloads(key)
            n = len(payloads)
        last = len(payloads) - 1
        for i, payload in enumerate(payloads):
            self.seq = (self.seq + 1) & 0xFFFF
            send(rtp_header(self.pt, self.seq, self.ts, self.ssrc,
                            i == last and self.spec.kind == "video", self.ext) + payload)
        self.tally.on_sent(self.sid, sent, n)
        self.tally.on_lag(sent, lag)
        return following

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
    """

    def __init__(self, streams: list[OutStream]) -> None:
        self.streams = streams
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-pacer", daemon=True)
        self._interval = sys.getswitchinterval()

    def start(self) -> None:
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        sys.setswitchinterval(self._interval)

    def _run(self) -> None:
        now = time.monotonic()
        due = [(s.first_due(now), i, s) for i, s in enumerate(self.streams)]
        heapq.heapify(due)
        try:
            while due and not self._stop.is_set():
                when, i, stream = due[0]
                now = time.monotonic()
                if when > now:
                    # sleep a little past the due time so that one wake-up serves every
                    # stream due meanwhile: each wake-up costs a GIL hand-over
                    self._stop.wait(when - now + BATCH)
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

    def __init__(self, member: Member, tally: Tally) -> None:
        self.member = member
        self.index = member.index
        self.pid = f"p{member.index}"
        self.tally = tally
        self.streams = [OutStream(sid, spec, tally) for sid, spec in member.streams()]

    @property
    def seen(self) -> set[int]:
        """Stream ids heard, and -1 if media without a probe was heard."""
        return self.tally.counts.seen(self.index)

    def on_pub_rtcp(self, packet: bytes) -> None:
        """RTCP from the server on our publishing transport: key-frame requests matter."""
        pos = 0
        while pos + 4 <= len(packet):
            pt = packet[pos + 1]
            fmt = packet[pos] & 0x1F
            if pt == 206 and fmt in (1, 4):  # RFC 4585 §6.3.1 PLI, RFC 5104 §4.3.1 FIR
                self.tally.plis += 1
                for s in self.streams:
                    if s.spec.kind == "video":
                        s.key_requests += 1
            pos += 4 * (struct.unpack_from("!H", packet, pos + 2)[0] + 1)


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

    def __init__(self, scenario: Scenario, indices: list[int], backend: Any) -> None:
        self.scenario = scenario
        self.tally = Tally(scenario.total, 2 * scenario.total)  # stream ids: bench/scenarios.py
        self.participants = [Participant(scenario.members[i], self.tally) for i in indices]
        self.backend = backend
        self.pacer = Pacer([s for p in self.participants for s in p.streams])
        self._rr_task: asyncio.Future[None] | None = None
        self._closed = False

    def emit(self, **msg: Any) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    async def run(self, reader: asyncio.StreamReader) -> None:
        await self.backend.publish(self.participants)
        self.emit(ev="published")
        await self._expect(reader, "subscribe")
        await self.backend.subscribe(self.participants)
        self.emit(ev="connected")
        await self._expect(reader, "start")
        # The packet loop makes no reference cycles; a full collection over aiortc's
        # objects would stall the loop for up to hundreds of ms and show up as latency.
        gc.collect()
        gc.freeze()
        gc.disable()
        self.pacer.start()
        self._rr_task = asyncio.ensure_future(self._keepalive())
        missing = await self._wait_flowing(20.0 + 0.5 * self.scenario.total)
        self.emit(ev="flowing", missing=missing)
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
                          send_errors=self.tally.send_errors, plis=self.tally.plis)
            elif op == "rate":
                for p in self.participants:
                    for s in p.streams:
                        s.scale = float(msg["x"])
            elif op == "stop":
                break
        await self.close()
        self.emit(ev="stopped")

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
        """An empty RR per second on every receiving transport: the SFU's liveness check."""
        while True:
            await asyncio.sleep(1.0)
            self.backend.keepalive(self.participants)

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
        return SealroomClient(args.host, args.port, args.bind, scenario)
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
    gen = Generator(scenario, indices, make_backend(args, scenario))
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
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="gen %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
