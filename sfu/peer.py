"""aiortc as a signaling-and-transport shell: ICE, DTLS, SRTP and SDP, but no media pipeline.

``RawPeer`` wraps an ``RTCPeerConnection`` so that:

* every transceiver's ``RTCRtpReceiver.receive`` and ``RTCRtpSender.send`` are replaced
  by no-ops, so aiortc never starts a decoder thread, jitter buffer, encoder or its own
  RTCP loops (a stock receiver decodes everything and, on E2EE VP8, sends a PLI per
  frame: docs/SFU.md);
* each DTLS transport's ``_handle_rtp_data`` / ``_handle_rtcp_data`` (called after SRTP
  unprotect, before aiortc parses anything) hand the raw plaintext bytes to our
  callbacks, and ``send`` writes raw RTP/RTCP through the same transport's SRTP session;
* ICE gathers one host candidate chosen by ``IcePolicy`` and never contacts a STUN server.

The fast path (plain-function handlers, as the SFU uses): once DTLS is connected, the
packets skip aiortc altogether. aioice hands every datagram to ``stun.parse_message``
first, then to an ``asyncio.Queue`` that aiortc's receive task drains, one ``await``
chain per packet (30–50 µs, and an unbounded queue under overload: latency grows to
seconds before anything is lost). Instead we wrap the ICE socket's
``datagram_received``: SRTP/SRTCP (RFC 7983 §7: first byte 128..191) is unprotected
with aiortc's own libsrtp session and handed to the handler right there, in the
socket's read callback; STUN (consent freshness, RFC 7675) and DTLS still go to
aioice/aiortc. ``send_rtp``/``send_rtcp`` protect with aiortc's outbound session and
write to the nominated pair's socket in one call. The kernel's socket buffer is then the
only queue, so overload shows as loss, not latency. Peers with coroutine handlers (the
media bot) keep aiortc's path.

The SFU and the Python media bot both use it, so neither ever decodes.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aioice.ice import StunProtocol
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer

from ._fanout import Sender
from .ice import IcePolicy
from .rtcp import URI_TWCC
from .rtp import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID, is_rtcp
from .srtp import Protector

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]] | Callable[[bytes], None]

SOCKET_BUFFER = 2 * 1024 * 1024  # bytes; asked of the kernel, which caps it (net.core.*mem_max)
ICE_COMPONENT = 1  # RTP and RTCP share component 1 (RFC 5761 mux, bundle)


@dataclass
class Negotiated:
    """What one m-line agreed on: everything needed to write raw RTP for it."""

    kind: str
    mid: str
    ssrc: int  # our sending SSRC for this m-line (aiortc's sender allocated it)
    rtx_ssrc: int
    payload_types: dict[str, int] = field(default_factory=dict)  # "vp8"/"opus" -> PT
    rtx_payload_type: int | None = None
    ext_ids: dict[str, int] = field(default_factory=dict)  # URI -> id

    @property
    def mid_id(self) -> int | None:
        return self.ext_ids.get(URI_MID)

    @property
    def audio_level_id(self) -> int | None:
        return self.ext_ids.get(URI_AUDIO_LEVEL)

    @property
    def abs_send_time_id(self) -> int | None:
        return self.ext_ids.get(URI_ABS_SEND_TIME)

    @property
    def twcc_id(self) -> int | None:
        """The transport-wide sequence number's id (sfu/transportcc.py; None: REMB)."""
        return self.ext_ids.get(URI_TWCC)


def negotiated(transceiver: Any) -> Negotiated:
    """Read the negotiated codecs and header extensions of an aiortc transceiver."""
    n = Negotiated(kind=transceiver.kind, mid=transceiver.mid or "",
                   ssrc=transceiver.sender._ssrc, rtx_ssrc=transceiver.sender._rtx_ssrc)
    media_pt: int | None = None
    for codec in transceiver._codecs or []:
        name = codec.mimeType.split("/")[-1].lower()
        if name == "rtx":
            continue
        n.payload_types.setdefault(name, codec.payloadType)
        if media_pt is None:
            media_pt = codec.payloadType
    for codec in transceiver._codecs or []:
        if codec.mimeType.lower().endswith("/rtx") and codec.parameters.get("apt") == media_pt:
            n.rtx_payload_type = codec.payloadType
    for ext in transceiver._headerExtensions or []:
        n.ext_ids[ext.uri] = ext.id
    return n


async def _not_started(*args: Any, **kwargs: Any) -> None:
    """Stands in for RTCRtpReceiver.receive / RTCRtpSender.send: start nothing."""


_IDLE_JITTER_BUFFER = JitterBuffer(capacity=16, prefetch=4)

# Synchronisation objects aiortc creates for a media pipeline that a RawPeer never starts
# (``__started`` stays False, so ``stop()`` and ``_handle_disconnect`` never touch them).
_RECEIVER_IDLE = ("decoder_error", "decoder_queue", "rtcp_exited", "rtcp_started")
_SENDER_IDLE = ("rtp_exited", "rtp_started", "rtcp_exited", "rtcp_started")


def _shed(transceiver: Any) -> None:
    """Free what an aiortc transceiver keeps for a media pipeline that never runs here.

    Each video receiver holds a bandwidth estimator of 2 000 rate buckets and a 512-slot
    jitter buffer (~100 kB); every receiver and sender holds a queue and events (~6 kB).
    A subscriber's PC has one transceiver per forwarded stream, so at N=20 that was
    ~2.5 MB per participant, growing with N (tests/test_peer.py measures it). Our
    packets never reach these objects (``_handle_rtp_data`` is ours); aiortc treats a
    ``None`` estimator as audio.
    """
    receiver, sender = transceiver.receiver, transceiver.sender
    if getattr(receiver, "_RTCRtpReceiver__started", True) or \
            getattr(sender, "_RTCRtpSender__started", True):
        return  # aiortc has started them after all (or renamed its fields): keep them
    receiver._RTCRtpReceiver__remote_bitrate_estimator = None
    receiver._RTCRtpReceiver__jitter_buffer = _IDLE_JITTER_BUFFER
    for name in _RECEIVER_IDLE:
        setattr(receiver, f"_RTCRtpReceiver__{name}", None)
    for name in _SENDER_IDLE:
        setattr(sender, f"_RTCRtpSender__{name}", None)


class RawPeer:
    """One RTCPeerConnection whose media bytes go to ``on_rtp``/``on_rtcp`` untouched.

    Handlers are plain functions (the fast path, see the module docstring) or coroutine
    functions (aiortc's receive task awaits them).
    """

    def __init__(self, policy: IcePolicy, on_rtp: Handler, on_rtcp: Handler,
                 on_error: Callable[[str], None] | None = None, max_pps: int = 0) -> None:
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.policy = policy
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_error = on_error
        self._fast_ok = not (inspect.iscoroutinefunction(on_rtp)
                             or inspect.iscoroutinefunction(on_rtcp))
        self._dtls: Any = None
        self._fast: _Outbound | None = None  # set while DTLS is up and the socket is ours
        # The same outbound for the compiled fan-out (sfu/_fanout.c): pointed while _fast
        # is, cleared otherwise; slots' lanes hold it (sfu/track.py).
        self.sender = Sender()
        self._wrapped: set[int] = set()  # id() of the StunProtocols whose input we take
        self.up = False  # DTLS connected: SRTP keys exist and sends can go out
        self.received = 0  # SRTP/SRTCP datagrams handed to us, for liveness checks
        self.srtp_rejected = 0  # failed authentication or replay (RFC 3711 §3.3.2)
        # Ingress limit: a token bucket of max_pps SRTP/SRTCP datagrams a second, max_pps
        # deep (0: no limit). It is checked before libsrtp and the parsers, so a flooding
        # participant costs a counter increment per excess datagram (docs/SFU.md "Ingress
        # limit").
        self.max_pps = max_pps
        self.rate_limited = 0
        self.srtp_forgotten = 0  # libsrtp streams removed for SSRCs we do not use (forget)
        self._tokens = float(max_pps)
        self._refilled = time.monotonic()
        # Rewrites each RTP packet just before protection: a subscriber's transport-wide
        # sequence number goes in here (sfu/transportcc.py), at the moment it leaves
        self.stamp: Callable[[bytes], bytes] | None = None

    def adopt(self) -> None:
        """Take over every transceiver and transport of the PC (idempotent).

        Call after every addTransceiver / setRemoteDescription and before yielding to
        the event loop: aiortc starts senders and receivers in a task it schedules there.
        """
        transceivers: list[Any] = self.pc.getTransceivers()
        for t in transceivers:
            if not getattr(t, "_sealroom_raw", False):
                t._sealroom_raw = True
                t.receiver.receive = _not_started
                t.sender.send = _not_started
                _shed(t)
            dtls: Any = t.receiver.transport
            if not getattr(dtls, "_sealroom_raw", False):
                dtls._sealroom_raw = True
                dtls._handle_rtp_data = self._rtp_in
                dtls._handle_rtcp_data = self._rtcp_in
                dtls.on("statechange", lambda d=dtls: self._dtls_state(d))
                self._dtls = dtls
            self.policy.apply(dtls.transport.iceGatherer._connection)

    # --- aiortc's path: before the takeover, and for coroutine handlers ------------------

    async def _rtp_in(self, data: bytes, arrival_time_ms: int = 0) -> None:
        if self._over_limit():
            return
        self.received += 1
        await self._call(self._on_rtp, data)

    async def _rtcp_in(self, data: bytes) -> None:
        if self._over_limit():
            return
        self.received += 1
        await self._call(self._on_rtcp, data)

    def forget(self, ssrc: int) -> bool:
        """Drop libsrtp's inbound stream state of ``ssrc`` (its replay window and rollover
        counter, ~270 bytes). libsrtp makes one for every SSRC that authenticates on the
        session's template (RFC 3711 §3.2.3: a cryptographic context per SSRC) and looks
        them up in a list, so the SFU forgets the SSRCs it will not forward: a participant
        that invents SSRCs then costs nothing that stays."""
        session = getattr(self._dtls, "_rx_srtp", None)
        if session is None:
            return False
        try:
            session.remove_stream(ssrc)
        except pylibsrtp.Error:  # no such stream (e.g. forgotten already)
            return False
        self.srtp_forgotten += 1
        return True

    def _over_limit(self) -> bool:
        """Take one token for an inbound datagram; True (and counted) if there is none.

        The bucket is refilled only when it runs dry (at max_pps a second since the last
        refill, up to max_pps): a sender below the limit reads the clock once per ~max_pps
        datagrams, and a flood gets max_pps a second spread evenly, not a burst of max_pps
        at the start of every second as a one-second window gave it (which raised the
        call's p99 under the fuzzer, docs/RELIABILITY.md "Fuzzed RTP/RTCP")."""
        if not self.max_pps:
            return False
        if self._tokens < 1.0:
            now = time.monotonic()
            self._tokens = min(float(self.max_pps),
                               self._tokens + (now - self._refilled) * self.max_pps)
            self._refilled = now
            if self._tokens < 1.0:
                self.rate_limited += 1
                if self._on_error:
                    self._on_error("rate_limited")
                return True
        self._tokens -= 1.0
        return False

    async def _call(self, handler: Handler, data: bytes) -> None:
        try:
            result = handler(data)
            if result is not None:
                await result
        except Exception:  # never let one packet kill the DTLS receive loop
            logger.exception("media handler failed")
            if self._on_error:
                self._on_error("handler_error")

    # --- the fast path -------------------------------------------------------------------

    def _dtls_state(self, dtls: Any) -> None:
        if dtls.state == "connected":
            self.up = True
            if self._fast_ok:
                self._take_over(dtls)
        elif dtls is self._dtls:
            self.up = False
            self._fast = None
            self.sender.clear()

    def _take_over(self, dtls: Any) -> None:
        """Route SRTP past aioice's queue and aiortc's receive task (module docstring)."""
        conn = dtls.transport._connection
        rx = Protector(dtls._rx_srtp)
        protocols: list[Any] = list(conn._protocols)
        receiver = None
        for proto in protocols:
            # Only plain UDP sockets: a TURN-relayed local candidate keeps aiortc's path.
            if type(proto) is not StunProtocol or id(proto) in self._wrapped:
                continue
            self._wrapped.add(id(proto))
            _grow_buffers(proto.transport)
            target: Any = proto  # an instance attribute shadows the method
            target.datagram_received = receiver = self._make_receiver(
                rx, proto.datagram_received)
        self._fast = _Outbound(Protector(dtls._tx_srtp), conn._nominated, self.sender)
        if receiver is not None:
            # SRTP that arrived during the handshake waits in aioice's queue for a receive
            # task that has not started yet. Handle it now, before anything newer: served
            # later, it would reach the SFU out of order (a key frame's first packet after
            # its second makes a hole that no NACK can fill).
            queue = conn._queue._queue  # the asyncio.Queue's deque of (data, component)
            backlog = [item for item in queue if item is not None and _is_srtp(item[0])]
            kept = [item for item in queue if item is None or not _is_srtp(item[0])]
            queue.clear()
            queue.extend(kept)
            for data, _component in backlog:
                receiver(data, None)

    def _make_receiver(self, rx: Any, original: Callable[[bytes, Any], None]
                       ) -> Callable[[bytes, Any], None]:
        on_rtp, on_rtcp, over_limit = self._on_rtp, self._on_rtcp, self._over_limit

        def datagram_received(data: bytes, addr: Any) -> None:
            # Hot path: one call per datagram from uvloop's read callback (_is_srtp inlined).
            if len(data) < 12 or not 127 < data[0] < 192:
                original(data, addr)  # STUN and DTLS: aioice / aiortc as before
                return
            if over_limit():  # before libsrtp: an excess datagram costs only a counter
                return
            try:
                if 191 < data[1] < 224:  # RFC 5761 §4: RTCP packet types 192..223
                    plain, handler = rx.unprotect_rtcp(data), on_rtcp
                else:
                    plain, handler = rx.unprotect(data), on_rtp
            except pylibsrtp.Error:  # forged, corrupted or replayed (RFC 3711 §3.3.2)
                self.srtp_rejected += 1
                if self._on_error:
                    self._on_error("srtp_rejected")
                return
            self.received += 1
            try:
                handler(plain)
            except Exception:  # one bad packet must not break the socket's reader
                logger.exception("media handler failed")
                if self._on_error:
                    self._on_error("handler_error")

        return datagram_received

    def send_rtp(self, data: bytes) -> bool:
        """Protect and send one RTP packet now; False if the transport is not up (hot path)."""
        if self.stamp is not None:
            data = self.stamp(data)
        return self._transmit(data, False)

    def send_rtcp(self, data: bytes) -> bool:
        """Protect and send one (compound) RTCP packet now; False if not up."""
        return self._transmit(data, True)

    def _transmit(self, data: bytes, rtcp: bool) -> bool:
        fast = self._fast
        if fast is None:
            return self._send_later(data)
        if fast.nominated.get(ICE_COMPONENT) is not fast.pair and not fast.repoint():
            return False
        try:
            fast.sendto(fast.protect_rtcp(data) if rtcp else fast.protect(data), fast.addr)
        except (OSError, pylibsrtp.Error):
            return False
        except AttributeError:
            # the socket closed a moment ago (a PLI or NACK timer of a participant that is
            # leaving): asyncio's sendto finds its socket and loop gone and fails in its own
            # error path
            return False
        return True

    def _send_later(self, data: bytes) -> bool:
        """No fast path (coroutine handlers, TURN socket): aiortc sends it in a task."""
        if not self.up:
            return False
        task = asyncio.ensure_future(self.send(data))
        _pending.add(task)
        task.add_done_callback(_pending.discard)
        return True

    async def send(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet; False if the transport is not up."""
        if self._fast is not None:
            return self.send_rtcp(data) if is_rtcp(data) else self.send_rtp(data)
        dtls = self._dtls
        if dtls is None or dtls.state != "connected":
            return False
        try:
            await dtls._send_rtp(data)
        except (ConnectionError, OSError, pylibsrtp.Error):
            return False
        return True

    async def close(self) -> None:
        self._fast = None
        self.sender.clear()
        self.up = False
        await self.pc.close()
        self._dtls = None


def _is_srtp(data: bytes) -> bool:
    """RFC 7983 §7: first byte 128..191 is RTP/RTCP (here SRTP/SRTCP); 12 bytes at least."""
    return len(data) >= 12 and 127 < data[0] < 192


class _Outbound:
    """Where and how a taken-over peer sends: resolved once, not once per packet.

    aioice may switch the nominated pair (RFC 8445 §8.1.1); every send compares the
    current pair with the one resolved here (one dict lookup) and re-resolves on change.
    The compiled ``Sender`` is re-pointed with it: it makes the same comparison, and a
    lane whose sender is not current is left to ``Slot.forward``, which comes here.
    """

    __slots__ = ("addr", "nominated", "pair", "protect", "protect_rtcp", "protector",
                 "sender", "sendto")

    def __init__(self, protector: Protector, nominated: dict[int, Any],
                 sender: Sender) -> None:
        self.protector = protector
        self.protect = protector.protect
        self.protect_rtcp = protector.protect_rtcp
        self.nominated = nominated
        self.sender = sender
        self.pair: Any = None
        self.sendto: Callable[[bytes, Any], None] = _drop_datagram
        self.addr: Any = None
        self.repoint()

    def repoint(self) -> bool:
        pair = self.nominated.get(ICE_COMPONENT)
        self.pair = pair
        self.sender.clear()
        if pair is None:
            return False
        transport = pair.protocol.transport
        self.sendto = transport.sendto
        self.addr = pair.remote_addr  # a property that builds a new tuple on each call
        self._point_sender(pair, transport)
        return True

    def _point_sender(self, pair: Any, transport: Any) -> None:
        """Point the compiled sender at a plain UDP pair; otherwise leave it clear."""
        native = self.protector.native()
        sock = transport.get_extra_info("socket")
        if native is None or sock is None or type(pair.protocol) is not StunProtocol:
            return  # a TURN-relayed local candidate: datagrams must go through aioice
        host, port = self.addr[0], self.addr[1]
        try:
            self.sender.point(native[0], native[1], self.protector.session, self.nominated,
                              pair, sock.fileno(), host, port)
        except (OSError, ValueError) as exc:
            logger.warning("compiled fan-out not used for this peer: %s", exc)


def _drop_datagram(data: bytes, addr: Any) -> None:
    """``_Outbound.sendto`` while no pair is nominated (never called: send checks first)."""


_pending: set[asyncio.Future[bool]] = set()  # sends handed to aiortc, kept until done


def _grow_buffers(transport: Any) -> None:
    """Larger socket buffers absorb bursts (a key frame is dozens of packets at once)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
        except OSError as exc:  # pragma: no cover - the kernel refused: keep its default
            logger.debug("setsockopt %s: %s", opt, exc)
