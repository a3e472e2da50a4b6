"""Transport-wide congestion control on a subscriber's downlink (``--bwe transport-cc``).

With it, the SFU estimates each subscriber's downlink itself instead of believing the
subscriber's REMB (docs/SFU.md "Loss and congestion", "Send-side estimate"):

* **SDP.** The sub offer gains the transport-wide sequence number extension and the
  ``transport-cc`` feedback type on every payload type (draft-holmer-rmcat-transport-
  wide-cc-extensions-01 §4; aiortc knows neither, so ``offer`` adds them to its SDP and
  ``answered_id`` reads the id back from the answer: aiortc drops extensions it does
  not know from what it negotiates).
* **Stamping.** Every RTP packet that leaves for the subscriber — media, RTX, probe
  padding — carries the extension, numbered as it is protected: by the compiled
  fan-out (sfu/_fanout.c ``Sender.set_twcc``) for the packets it sends, by
  ``TransportCc.stamp`` (``RawPeer.stamp``) for those of the Python path, which carry a
  placeholder until then (``Slot._extensions``). Each number's size and send time are
  logged for the estimator. The forwarding path stays the compiled one: tried first with
  every such subscriber's packets on the Python path, a four-browser call on two cores
  lost its ICE consent (STUN round trips of 160 ms median, against 16 ms) and every page
  rejoined.
* **Feedback.** The browser then reports, for each sequence number, whether and when it
  arrived (``rtcp.TransportFeedback``), and stops sending REMB for those packets
  (libwebrtc's receive-side controller sends one or the other). ``sfu/sendside.py``
  turns the reports into an estimate, which takes the REMB's place in the subscriber's
  ``DownlinkBudget``; what arrived throughout the last second without loss
  (``delivered``) is the most a paused stream may resume into (``delivery_gated``).
"""

from __future__ import annotations

import collections
import re
import struct
import time

from ._fanout import Sender
from .rtcp import URI_TWCC
from .sendside import SendSideEstimator

# The extension's id in our sub offers. aiortc's offers use 1 (MID), 2 (audio level) and
# 3 (abs-send-time); RFC 8285 §4.2's one-byte form allows 1..14, and one id serves every
# m-line of the BUNDLE group (all of them share one transport, and one sequence).
EXT_ID = 5
PLACEHOLDER = b"\x00\x00"  # the element's value until ``stamp`` writes the sequence number
HELD = 1.0  # seconds a delivered rate must have held to count (``delivered``)
# The most packets one transport feedback may report. A browser reports every 50-250 ms:
# 250 packets at 1 000 a second. One that claims more is refused as malformed, so the
# parse's loop costs a flooding subscriber's datagrams at most this much each.
MAX_REPORTED = 1024

_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ", re.MULTILINE)
_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)? (\S+)", re.MULTILINE)


def offer(sdp: str) -> str:
    """``sdp`` (aiortc's sub offer) with the transport-wide sequence number extension and
    ``a=rtcp-fb:<pt> transport-cc`` in every audio and video m-section."""
    head, *sections = re.split(r"(?=^m=)", sdp, flags=re.MULTILINE)
    out = [head]
    for section in sections:
        if not section.startswith(("m=audio", "m=video")) or URI_TWCC in section:
            out.append(section)
            continue
        eol = "\r\n" if "\r\n" in section else "\n"
        lines = section.split(eol)
        tail = [""] if lines and lines[-1] == "" else []
        if tail:
            lines.pop()
        extmaps = [i for i, ln in enumerate(lines) if ln.startswith("a=extmap:")]
        at = (extmaps[-1] if extmaps else len(lines) - 1) + 1
        lines.insert(at, f"a=extmap:{EXT_ID} {URI_TWCC}")
        feedback = [f"a=rtcp-fb:{pt} transport-cc" for pt in _RTPMAP.findall(section)]
        fb = [i for i, ln in enumerate(lines) if ln.startswith(("a=rtcp-fb:", "a=rtpmap:",
                                                                  "a=fmtp:"))]
        at = (fb[-1] if fb else len(lines) - 1) + 1
        lines[at:at] = feedback
        out.append(eol.join(lines + tail))
    return "".join(out)


def answered_id(sdp: str) -> int | None:
    """The id the subscriber's answer gives the transport-wide sequence number extension
    (None: it declined it, and keeps sending REMB)."""
    for ext_id, uri in _EXTMAP.findall(sdp):
        if uri == URI_TWCC and 1 <= int(ext_id) <= 255:
            return int(ext_id)
    return None


def element_offset(packet: bytes, ext_id: int) -> int:
    """Where the value of extension element ``ext_id`` lies in an RTP packet (RFC 8285:
    one-byte §4.2 or two-byte §4.3 form) if it is 2 bytes long; -1 otherwise."""
    n = len(packet)
    if n < 12 or not packet[0] & 0x10:
        return -1
    at = 12 + 4 * (packet[0] & 0x0F)
    if at + 4 > n:
        return -1
    profile, words = struct.unpack_from("!HH", packet, at)
    pos, end = at + 4, min(n, at + 4 + 4 * words)
    if profile == 0xBEDE:
        while pos < end:
            b = packet[pos]
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 0:  # padding
                pos += 1
                continue
            if eid == 15:  # §4.2: stop
                return -1
            if eid == ext_id and length == 2 and pos + 3 <= end:
                return pos + 1
            pos += 1 + length
    elif profile & 0xFFF0 == 0x1000:
        while pos + 1 < end:
            eid = packet[pos]
            if eid == 0:
                pos += 1
                continue
            length = packet[pos + 1]
            if eid == ext_id and length == 2 and pos + 4 <= end:
                return pos + 2
            pos += 2 + length
    return -1


class TransportCc:
    """One subscriber's transport-wide sequence numbers and send-side estimate.

    The numbers live in the subscriber's ``Sender`` (sfu/_fanout.c): the compiled
    fan-out numbers the packets it sends, and ``stamp`` those of the Python path, from
    the same sequence; both log each number's size and send time, which ``on_feedback``
    hands to the estimator before the feedback that reports them.
    """

    def __init__(self, ext_id: int, sender: Sender) -> None:
        sender.set_twcc(ext_id)  # ValueError unless 1..14: the one-byte form
        self.ext_id = ext_id
        self.sender = sender
        self.estimator = SendSideEstimator()
        self._acked: collections.deque[tuple[float, int]] = collections.deque()

    def stamp(self, packet: bytes) -> bytes:
        """``packet`` with the next transport-wide sequence number in its element (if it
        has one). Called just before protection (``RawPeer.send_rtp``)."""
        at = element_offset(packet, self.ext_id)
        if at < 0:
            return packet
        seq = self.sender.twcc_next(len(packet), time.monotonic())  # (logged on the wire)
        return packet[:at] + struct.pack("!H", seq) + packet[at + 2 :]

    def on_feedback(self, arrivals: list[tuple[int, int | None]], now: float) -> int:
        """One transport feedback's reports; the estimate after it (bits/s)."""
        estimator = self.estimator
        for seq, size, at in self.sender.twcc_drain():
            estimator.on_sent(seq, size, at)
        estimator.on_feedback(arrivals, now)
        acked = estimator.acked_rate
        if acked is not None:
            self._acked.append((now, acked))
        while self._acked and self._acked[0][0] < now - HELD:
            self._acked.popleft()
        return estimator.estimate

    def delivered(self, now: float) -> int | None:
        """A rate the link delivered for the whole of the last ``HELD`` seconds: the
        least of the half-second rates reported in it (None: not reported that long).
        One half second can show more than the link's rate: a shaper's token bucket
        lets a burst through at once (16 kB in 0.5 s is 256 kbit/s more)."""
        recent = [(t, rate) for t, rate in self._acked if t >= now - HELD]
        if not recent or recent[0][0] > now - 0.8 * HELD:
            return None
        return min(rate for _, rate in recent)
