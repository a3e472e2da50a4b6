"""aiortc as a signaling-and-transport shell: ICE, DTLS, SRTP and SDP, but no media pipeline.

``RawPeer`` wraps an ``RTCPeerConnection`` so that:

* every transceiver's ``RTCRtpReceiver.receive`` and ``RTCRtpSender.send`` are replaced
  by no-ops, so aiortc never starts a decoder thread, jitter buffer, encoder or its own
  RTCP loops (a stock receiver decodes everything and, on E2EE VP8, sends a PLI per
  frame: DESIGN.md "Media plane");
* each DTLS transport's ``_handle_rtp_data`` / ``_handle_rtcp_data`` (called after SRTP
  unprotect, before aiortc parses anything) hand the raw plaintext bytes to our
  callbacks, and ``send`` writes raw RTP/RTCP through the same transport's SRTP session;
* ICE gathers one host candidate chosen by ``IcePolicy`` and never contacts a STUN server.

The SFU and the Python media bot both use it, so neither ever decodes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pylibsrtp
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from .ice import IcePolicy
from .rtp import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[None]]


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


class RawPeer:
    """One RTCPeerConnection whose media bytes go to ``on_rtp``/``on_rtcp`` untouched."""

    def __init__(self, policy: IcePolicy, on_rtp: Handler, on_rtcp: Handler,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        )
        self.policy = policy
        self._on_rtp = on_rtp
        self._on_rtcp = on_rtcp
        self._on_error = on_error
        self._dtls: Any = None
        self.received = 0  # SRTP/SRTCP datagrams handed to us, for liveness checks

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
            dtls: Any = t.receiver.transport
            if not getattr(dtls, "_sealroom_raw", False):
                dtls._sealroom_raw = True
                dtls._handle_rtp_data = self._rtp_in
                dtls._handle_rtcp_data = self._rtcp_in
                self._dtls = dtls
            self.policy.apply(dtls.transport.iceGatherer._connection)

    async def _rtp_in(self, data: bytes, arrival_time_ms: int = 0) -> None:
        self.received += 1
        try:
            await self._on_rtp(data)
        except Exception:  # never let one packet kill the DTLS receive loop
            logger.exception("RTP handler failed")
            if self._on_error:
                self._on_error("handler_error")

    async def _rtcp_in(self, data: bytes) -> None:
        self.received += 1
        try:
            await self._on_rtcp(data)
        except Exception:
            logger.exception("RTCP handler failed")
            if self._on_error:
                self._on_error("handler_error")

    @property
    def connected(self) -> bool:
        return self._dtls is not None and self._dtls.state == "connected"

    async def send(self, data: bytes) -> bool:
        """Protect and send one RTP or RTCP packet; False if the transport is not up."""
        dtls = self._dtls
        if dtls is None or dtls.state != "connected":
            return False
        try:
            await dtls._send_rtp(data)
        except (ConnectionError, OSError, pylibsrtp.Error):
            return False
        return True

    async def close(self) -> None:
        await self.pc.close()
        self._dtls = None
