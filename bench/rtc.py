"""Handshake helpers shared by the generator's SFU clients (sealroom, Janus).

A virtual participant has a ``pub`` RawPeer (sendonly audio/video) and a ``sub`` RawPeer
(whatever the server offers). aiortc does ICE, DTLS and SDP; once a PeerConnection is
connected, ``gen.take_over`` moves its packets off aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aiortc import RTCRtpSender, RTCSessionDescription

from peers.mediabot import REPAIRED_RID_EXT_ID, RID_EXT_ID
from sfu.ice import IcePolicy
from sfu.peer import RawPeer, negotiated
from sfu.rtp import build_extensions
from sfu.simulcast import URI_REPAIRED_RID, URI_RID

from .gen import Participant, Tally, take_over
from .scenarios import level_byte

CODECS = {"audio": "opus", "video": "vp8"}


def simulcast_offer(sdp: str, rids: list[str]) -> str:
    """aiortc's offer with its video m-section made simulcast as Chromium's is: the RID
    and repaired-RID header extensions (RFC 8852 §3.1, §3.2), ``a=rid:<id> send`` per layer
    (RFC 8851 §4), ``a=simulcast:send`` in ``rids``' order, lowest first (RFC 8853 §5.1),
    and no ``a=ssrc`` (the SSRCs are learned from the RID extension). The same edit as
    ``peers.mediabot.SimulcastBot.munge_offer``, for any list of layers."""
    out: list[str] = []
    video = False
    tail = [f"a=rid:{rid} send" for rid in rids] + ["a=simulcast:send " + ";".join(rids)]
    for line in sdp.splitlines():
        if line.startswith("m="):
            if video:
                out.extend(tail)
            video = line.startswith("m=video")
        if video and line.startswith(("a=ssrc:", "a=ssrc-group:")):
            continue
        out.append(line)
        if video and line.startswith("a=mid:"):
            out.append(f"a=extmap:{RID_EXT_ID} {URI_RID}")
            out.append(f"a=extmap:{REPAIRED_RID_EXT_ID} {URI_REPAIRED_RID}")
    if video:
        out.extend(tail)
    return "\r\n".join(out) + "\r\n"


async def _drop(data: bytes) -> None:
    """RawPeer callback: never reached once the packets are taken over."""


class Peers:
    """The two PeerConnections of one virtual participant."""

    def __init__(self, part: Participant, ice: IcePolicy) -> None:
        self.part = part
        self.pub = RawPeer(ice, _drop, _drop)
        self.sub = RawPeer(ice, _drop, _drop)
        self.lock = asyncio.Lock()
        self.sub_rtcp: Any = None
        self.pub_rtcp: Any = None
        self.sub_taken = False
        self.pub_taken = False
        self.rr_ssrc = 0x5EA1 + part.index
        self.sub_offers = 0  # sub offers answered
        self.constrained: set[str] = set()  # sub MIDs given sfu-video-constraints (simulcast)
        self.errors: list[tuple[str, str]] = []  # (id, message) of each sfu-error
        # time.monotonic() of: the join, both transports up and taken over, the first
        # forwarded packet heard (joinstorm, bench/sealroom_client.py)
        self.joined_at: float | None = None
        self.connected_at: float | None = None
        self.first_packet_at: float | None = None

    async def pub_offer(self) -> str:
        pc = self.pub.pc
        # one m-line per kind; a simulcast member's layers share the video one
        kinds = list(dict.fromkeys(spec.kind for _, spec in self.part.member.streams()))
        for kind in kinds:
            t = pc.addTransceiver(kind, direction="sendonly")
            caps = RTCRtpSender.getCapabilities(kind).codecs
            # with video/rtx among the preferences aiortc's offer carries an rtx payload
            # type (apt = VP8's) and a=ssrc-group:FID <media> <rtx> (RFC 5576 §4.2): what
            # the server needs to map our retransmissions (--uplink-loss) to the stream
            t.setCodecPreferences([c for c in caps if c.mimeType.lower() in
                                   (f"{kind}/{CODECS[kind]}", f"{kind}/rtx")])
        self.pub.adopt()
        await pc.setLocalDescription(await pc.createOffer())
        self.pub.adopt()
        sdp: str = pc.localDescription.sdp
        rids = [spec.rid for spec in self.part.member.layers if spec.rid is not None]
        return simulcast_offer(sdp, rids) if rids else sdp

    async def pub_answer(self, sdp: str) -> None:
        async with self.lock:
            await self.pub.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
            self.pub.adopt()
            transceivers: list[Any] = self.pub.pc.getTransceivers()
            for t in transceivers:
                n = negotiated(t)
                for s in self.part.streams:
                    if s.spec.kind != n.kind:
                        continue
                    s.pt = n.payload_types[CODECS[n.kind]]
                    if s.layered:
                        # each layer keeps its own random SSRC (the offer announced none);
                        # MID and RID until a report block names it (OutStream.acknowledge)
                        if n.mid_id is not None and s.spec.rid is not None:
                            s.ext = build_extensions([(n.mid_id, n.mid.encode()),
                                                      (RID_EXT_ID, s.spec.rid.encode())])
                        continue
                    s.ssrc = n.ssrc
                    if s.uplink is not None:
                        # RTX if the answer kept the offer's rtx (RFC 4588 §8.1: apt = the
                        # media PT); its SSRC is the second member of the offer's
                        # a=ssrc-group:FID (RFC 5576 §4.2); None: resend packets as they were
                        s.uplink.rtx_pt = n.rtx_payload_type
                        s.uplink.rtx_ssrc = n.rtx_ssrc
                    elements: list[tuple[int, bytes]] = []
                    if n.mid_id is not None:
                        elements.append((n.mid_id, n.mid.encode()))
                    if n.kind == "audio" and n.audio_level_id is not None:
                        # RFC 6464 §3: the member's level (bench/scenarios.py), fixed
                        elements.append((n.audio_level_id, level_byte(self.part.member.level)))
                    s.ext = build_extensions(elements)

    async def sub_offer(self, sdp: str) -> str:
        async with self.lock:
            pc = self.sub.pc
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            self.sub.adopt()
            await pc.setLocalDescription(await pc.createAnswer())
            self.sub.adopt()
            answer: str = pc.localDescription.sdp
            self.sub_offers += 1
            return answer

    def try_take_over(self, tally: Tally) -> None:
        if not self.pub_taken and self.part.streams and self.pub.up:
            send, self.pub_rtcp = take_over(self.pub, self.part.index, self.part.on_pub_rtcp,
                                            tally)
            for s in self.part.streams:
                s.send = send
            self.pub_taken = True
        if not self.sub_taken and self.sub.up:
            _, self.sub_rtcp = take_over(self.sub, self.part.index, None, tally)
            self.sub_taken = True

    def keepalive(self, pub: bool = False) -> None:
        """An empty RR (RFC 3550 §6.4.2, RC = 0) on the receiving transport, and with
        ``pub`` on the publishing one too: a client that is connected but holds its media
        back still tells the server it is alive. ``pub`` only while the pacer's thread
        has not started: from then on that thread alone uses the publishing SRTP sessions
        (bench/gen.py ``Pacer``), and its media and sender reports say the same."""
        rr = b"\x80\xc9\x00\x01" + self.rr_ssrc.to_bytes(4, "big")
        if self.sub_rtcp is not None:
            self.sub_rtcp(rr)
        if pub and self.pub_rtcp is not None:
            self.pub_rtcp(rr)

    async def close(self) -> None:
        for peer in (self.pub, self.sub):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), 5.0)


async def wait_until(peers: list[Peers], tally: Tally, want_pub: bool, want_sub: bool,
                     timeout: float) -> None:
    """Poll every 50 ms until the wanted transports are connected and taken over."""
    deadline = time.monotonic() + timeout
    while True:
        for p in peers:
            p.try_take_over(tally)
        done = all((not want_pub or not p.part.streams or p.pub_taken)
                   and (not want_sub or p.sub_taken) for p in peers)
        if done:
            return
        if time.monotonic() > deadline:
            missing = [p.part.pid for p in peers
                       if (want_pub and p.part.streams and not p.pub_taken)
                       or (want_sub and not p.sub_taken)]
            raise TimeoutError(f"not connected after {timeout:.0f} s: {missing[:10]}")
        await asyncio.sleep(0.05)
