"""One participant's two PeerConnections with the SFU (LiveKit's model).

``pub``: the client offers its sendonly audio+video, the SFU answers and receives.
``sub``: the SFU offers one m-line per other publisher's track (a ``Slot``), the client
answers; one offer outstanding at a time, changes queued while waiting (``_dirty``), and
changes that come in a burst (a join storm) coalesced into one offer (``renegotiate``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiortc import RTCRtpSender, RTCSessionDescription
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import SessionDescription

from . import rtcp, transportcc
from .allocator import DownlinkBudget, Video, ladder
from .dynacast import Dynacast, needed
from .errors import SfuError
from .pacer import FACTOR as PACING_FACTOR
from .pacer import Pacer
from .peer import RawPeer, negotiated
from .rtcp import URI_TWCC
from .rtp import URI_MID, RtpHeader
from .simulcast import SimulcastOffer, complete_answer, parse_offer
from .track import CODEC as CODECS
from .track import RTP_OVERHEAD, PublishedTrack, Slot
from .transportcc import TransportCc

if TYPE_CHECKING:
    from .room import Room
    from .sfu import Sfu

logger = logging.getLogger(__name__)
# one line per subscriber and allocation at DEBUG: what the allocator believed and chose
# (rates and layer names only; nothing secret). ``--log-level debug`` shows it.
budget_log = logging.getLogger(__name__ + ".budget")

Send = Callable[[dict[str, Any]], Awaitable[None]]

PADDING_PACKET = 290  # bytes on the wire per probe packet (255 of padding + headers)
# at most this many probe packets per 10 ms step (a step that wakes late: as many more
# as the time since the last one allows)
PROBE_BURST = 20
PROBE_STEP = 0.01  # seconds
PROBE_CATCH_UP = 0.05  # a late step sends what up to this many seconds owe
# padding bits/s at most: every padding packet leaves through the Python path, one send
# each. Up to 4.6 Mbit/s of it (~2,000 packets a second) per subscriber, together with
# layer holds that a proof ended for good (sfu/allocator.py choose_layers), made a clean
# call of four browsers on two cores switch layers 50-77 times a minute and lose a page's
# media; ~2.3 Mbit/s at most had been measured without either
PROBE_MAX = 2_500_000
PROBE_STEPS = int(60 / PROBE_STEP)  # a prober stops after a minute (restarted if due)
# SRTCP sender SSRCs a PC keeps in libsrtp besides its tracks' (browsers use one or two)
MAX_RTCP_SENDERS = 8
PACE_AFTER_LOSS = 30.0  # seconds a subscriber's packets stay paced after its link lost some


class Participant:
    def __init__(self, sfu: Sfu, room: Room, pid: str, send: Send) -> None:
        self.sfu = sfu
        self.room = room
        self.pid = pid
        self._send = send
        self.stats = sfu.counters
        self.closed = False
        cfg = sfu.config
        self.pub = RawPeer(sfu.ice, self._pub_rtp, self._pub_rtcp, self.stats.drop,
                           max_pps=cfg.max_pub_pps)
        self.sub = RawPeer(sfu.ice, self._sub_rtp, self._sub_rtcp, self.stats.drop,
                           max_pps=cfg.max_sub_pps)
        # SRTCP sender SSRCs kept on each PC (_keep_rtcp_sender)
        self._pub_senders: set[int] = set()
        self._sub_senders: set[int] = set()
        self.rtcp_ssrc = random.getrandbits(32) or 1  # our SSRC in RTCP sent to the publisher
        self.tracks: dict[str, PublishedTrack] = {}  # publisher MID -> track
        self._by_ssrc: dict[int, PublishedTrack] = {}
        # simulcast m-lines of the latest pub offer, by MID (sfu/simulcast.py)
        self._simulcast: dict[str, SimulcastOffer] = {}
        # per simulcast MID: the layers this publisher was last told to send (sfu/dynacast.py)
        self._dynacast: dict[str, Dynacast] = {}
        # the pub MID that carries a screen share ("Screen sharing"), or None
        self.screen_mid: str | None = None
        self._screen_changed = False  # screen_mid changed by the last pub offer
        self._offered_screens: frozenset[str] = frozenset()  # sub MIDs last offered as screens
        self._pub_answer = ""  # the pub answer as sent: aiortc's, completed for simulcast
        self.slots: list[Slot] = []
        self._slot_by_ssrc: dict[int, Slot] = {}
        self._sub_lock = asyncio.Lock()
        self._dirty = False
        self._awaiting_answer = False
        # re-offer coalescing (renegotiate): when the oldest unoffered change came, when
        # the latest did, and the timer that offers them
        self._dirty_since: float | None = None
        self._last_change = 0.0
        self._offer_timer: asyncio.TimerHandle | None = None
        self.sub_offers = 0  # sub offers sent to this participant
        # when media or RTCP first became due from this participant: the idle clock
        # (idle_timeout) runs from then on, never before (_watch, docs/SFU.md "Join storms")
        self.due_since: float | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        # when the SFU first sent this participant an SDP (pub answer or sub offer): ICE
        # can start from then on, and connect_timeout counts from then, not from the join
        # (in a storm the SFU's own queue of SDP work may come first)
        self.negotiated_at: float | None = None
        # the downlink: its estimate and allocation (sfu/allocator.py), what was sent
        self.budget = DownlinkBudget()
        # its send-side estimate, with --bwe transport-cc once its answer accepted it
        self.twcc: TransportCc | None = None
        self.pacer = Pacer(self.sub.send_rtp, self.stats)
        self._paced = False
        self._sent_mark = (0, 0, time.monotonic())
        self._probe_bps = 0  # padding rate of a running probe (bits/s), 0: none
        self._prober: asyncio.Future[None] | None = None
        self.padding_octets = 0
        # the subscriber's latest (extended highest seq, cumulative lost) per SSRC we send
        # it, and their values at the last allocation: loss over whole intervals, because
        # the fraction in one RR covers only the time since the previous one, which is a
        # few milliseconds when the RR rides on a NACK (RFC 4585 §3.1 compound feedback)
        self._reports: dict[int, tuple[int, int]] = {}
        self._reports_mark: dict[int, tuple[int, int, int]] = {}  # + publisher's unrepaired
        self._pacer_dropped_mark = 0
        self._announcing = False
        self._watchdog = asyncio.ensure_future(self._watch())

    async def send(self, msg: dict[str, Any]) -> None:
        """A message to this participant's signaling socket; a dead socket is not our error."""
        if self.closed:
            return
        try:
            await self._send(msg)
        except Exception as exc:  # the socket's owner handles its own failure
            logger.debug("send to %s failed: %s", self.pid, exc)

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run a coroutine owned by this participant (cancelled on close)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        # Retrieve the outcome, so that a failure is logged here once, with the
        # participant, instead of as asyncio's "Task exception was never retrieved".
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.warning("participant %s: background task failed: %r", self.pid, exc)

    def send_rtcp(self, data: bytes) -> bool:
        """RTCP to this participant's publisher PC (PLI, RR, REMB)."""
        return not self.closed and self.pub.send_rtcp(data)

    # --- pub: the participant publishes -------------------------------------------------

    async def on_pub_offer(self, sdp: str, screen: str | None = None) -> None:
        """A pub offer (or re-offer); ``screen``: the MID of its screen share, if any
        (docs/SFU.md "Screen sharing")."""
        sfu = self.sfu
        sfu.pubs_waiting += 1
        sfu.pubs_idle.clear()
        try:
            async with sfu.sdp_lock:
                if self.closed:  # left while waiting for its turn: nobody to answer
                    return
                new, removed = await self._answer_pub(sdp, screen)
        finally:
            sfu.pubs_waiting -= 1
            if not sfu.pubs_waiting:
                sfu.pubs_idle.set()
        await self.send({"type": "sfu-answer", "pc": "pub", "sdp": self._pub_answer})
        if self.negotiated_at is None:
            self.negotiated_at = time.monotonic()
        screen_changed, self._screen_changed = self._screen_changed, False
        if new or removed or screen_changed:
            logger.info("%s publishes %s%s", self.pid, [t.kind for t in new],
                        f", stopped {len(removed)}" if removed else "")
            await self.room.tracks_changed(exclude=self)

    def _check_screen_limit(self) -> None:
        """``screen-limit`` when the room has its ``max_screens`` screen shares already."""
        limit = self.sfu.config.max_screens
        others = sum(1 for q in self.room.participants.values()
                     if q is not self and q.screen_mid is not None)
        if others >= limit:
            raise SfuError("screen-limit", f"{others} screen share(s) in this room already "
                                           f"(at most {limit} at once)")

    def is_screen(self, track: PublishedTrack) -> bool:
        """Whether ``track`` (one of ours) is our screen share."""
        return self.screen_mid is not None and track.mid == self.screen_mid

    def _drop_track(self, mid: str) -> PublishedTrack:
        """The publisher stopped sending on ``mid`` (its m-line now inactive): forget the
        track; its subscribers' slots are freed by the re-offers that follow."""
        track = self.tracks.pop(mid)
        for stream in track.streams():
            for ssrc in (stream.ssrc, stream.rtx_ssrc):
                if ssrc is not None and self._by_ssrc.get(ssrc) is stream:
                    del self._by_ssrc[ssrc]
        self._dynacast.pop(mid, None)
        track.close()
        return track

    async def _answer_pub(self, sdp: str, screen: str | None = None
                          ) -> tuple[list[PublishedTrack], list[PublishedTrack]]:
        """Apply a pub offer and make the answer; the tracks it added and those whose
        m-line it made inactive (removed)."""
        try:
            parsed = SessionDescription.parse(sdp)
            if not any(m.kind in CODECS for m in parsed.media):
                raise ValueError("no audio or video m-line")
        except Exception as exc:
            raise SfuError("bad-sdp", f"cannot apply the pub offer: {exc}") from exc
        if screen is not None and not any(m.kind == "video" and m.rtp.muxId == screen
                                          for m in parsed.media):
            raise SfuError("bad-message", "screen names no video m-line of the offer")
        if screen is not None and screen != self.screen_mid:
            self._check_screen_limit()
        try:
            simulcast = parse_offer(sdp)
            await self.pub.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:
            raise SfuError("bad-sdp", f"cannot apply the pub offer: {exc}") from exc
        self.pub.adopt()
        new: list[PublishedTrack] = []
        transceivers: list[Any] = self.pub.pc.getTransceivers()
        for t in transceivers:
            # only VP8 / Opus (and VP8's RTX) are accepted from publishers
            keep = [c for c in t._codecs if c.mimeType.lower() == f"{t.kind}/{CODECS[t.kind]}"]
            pts = {c.payloadType for c in keep}
            keep += [c for c in t._codecs
                     if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") in pts]
            if not keep:
                raise SfuError("unsupported-codec", f"{t.kind} must offer {CODECS[t.kind]}")
            t._codecs = keep
            if (t.mid in self.tracks or t.direction not in ("recvonly", "sendrecv")
                    or t._offerDirection not in ("recvonly", "sendrecv")):
                continue
            track = PublishedTrack(self, t.kind, t.mid, self.stats, self.sfu.config.rtx_cache,
                                   self.sfu.config.pli_interval, self.sfu.config.drop_silence,
                                   self.sfu.outbox)
            offer = simulcast.get(t.mid) if t.kind == "video" else None
            if offer is not None:
                # one PublishedTrack per layer, each SSRC bound by its RID (_learn_ssrc),
                # never from a=ssrc nor the first SSRC seen with this MID
                track.add_layers(offer.rids)
                if self.sfu.config.dynacast:
                    self._dynacast[t.mid] = Dynacast(offer.rids,
                                                     self.sfu.config.dynacast_pause_delay)
            else:
                track.ssrc, track.rtx_ssrc = _media_ssrcs(parsed, t.mid)
            self.tracks[t.mid] = track
            if track.ssrc is not None:
                self._by_ssrc[track.ssrc] = track
            if track.rtx_ssrc is not None:
                # the repairs our NACKs ask for, and Chromium's bandwidth probes (padding)
                self._by_ssrc[track.rtx_ssrc] = track
            new.append(track)
        # RFC 8829 §5.3.1 (JSEP): a publisher stops a track without removing its m-line by
        # offering it inactive (the page does when a screen share ends)
        removed = [self._drop_track(t.mid) for t in transceivers
                   if t.mid in self.tracks and t._offerDirection not in ("recvonly", "sendrecv")]
        screen = screen if screen in self.tracks else None
        if screen != self.screen_mid:
            self.screen_mid = screen
            self._screen_changed = True
        answer = await self.pub.pc.createAnswer()
        await self.pub.pc.setLocalDescription(answer)
        self.pub.adopt()
        self._simulcast = {mid: o for mid, o in simulcast.items()
                           if mid in self.tracks and self.tracks[mid].layers}
        self._pub_answer = complete_answer(self.pub.pc.localDescription.sdp, self._simulcast)
        for t in transceivers:
            if t.mid in self.tracks:
                self.tracks[t.mid].set_pub(negotiated(t))
        return new, removed

    def _pub_rtp(self, data: bytes) -> None:
        """Publisher RTP: parse the header, find the track, fan out (hot path)."""
        try:
            h = RtpHeader.parse(data)
        except ValueError:
            self.stats.drop("malformed_rtp")
            ssrc = int.from_bytes(data[8:12], "big")  # libsrtp took it: 12 bytes at least
            if ssrc not in self._by_ssrc:
                self._forget(self.pub, ssrc)
            return
        track = self._by_ssrc.get(h.ssrc)
        if track is None:
            track = self._learn_ssrc(h)
            if track is None:
                self.stats.drop("unknown_ssrc")
                self._forget(self.pub, h.ssrc)  # libsrtp's state for it would stay
                return
        if h.payload_type != track.payload_type:
            if h.ssrc == track.rtx_ssrc and h.payload_type == track.rtx_payload_type:
                track.on_rtx(h, data)  # RFC 4588: a repair, or a padding probe
                return
            self.stats.drop("unexpected_pt")  # a codec we did not accept
            return
        self.stats.received_packets += 1
        track.on_rtp(h, data)

    def _learn_ssrc(self, h: RtpHeader) -> PublishedTrack | None:
        """No a=ssrc in the offer: bind the SSRC by the MID extension (RFC 8843 §9.2), or a
        simulcast layer's by its RID (RFC 8852 §3.1) and an RTX SSRC by its repaired RID
        (§3.2). Chromium sends them only on each SSRC's first packets: the binding stays."""
        exts = h.extensions
        for mid, offer in self._simulcast.items():
            track = self.tracks.get(mid)
            mid_id = track.pub.ext_ids.get(URI_MID) if track and track.pub else None
            if track is None or (mid_id is not None and mid_id in exts
                                 and exts[mid_id] != mid.encode()):
                continue  # a MID, and another m-line's
            rid = exts.get(offer.rid_id)
            repaired = exts.get(offer.repaired_id) if offer.repaired_id is not None else None
            index = offer.layer_of(rid if rid is not None else repaired or b"")
            if index is None:
                continue
            layer = track.layers[index]
            if rid is not None:
                if layer.ssrc is not None:
                    self._by_ssrc.pop(layer.ssrc, None)  # the layer's SSRC changed
                layer.ssrc = h.ssrc
            else:
                if layer.rtx_ssrc is not None:
                    self._by_ssrc.pop(layer.rtx_ssrc, None)
                layer.rtx_ssrc = h.ssrc
            self._by_ssrc[h.ssrc] = layer
            self.stats.add("simulcast_ssrcs_bound")
            logger.debug("%s: SSRC %d is layer %s%s of MID %s", self.pid, h.ssrc, layer.rid,
                         "" if rid is not None else " (RTX)", mid)
            return layer
        for track in self.tracks.values():
            if track.ssrc is None and track.pub is not None and not track.layers:
                mid_id = track.pub.ext_ids.get(URI_MID)
                if mid_id is not None and h.extensions.get(mid_id) == track.mid.encode():
                    track.ssrc = h.ssrc
                    self._by_ssrc[h.ssrc] = track
                    return track
        return None

    def _pub_rtcp(self, data: bytes) -> None:
        self._keep_rtcp_sender(self.pub, self._pub_senders, data)
        try:
            packets = rtcp.parse_compound(data, 0)  # (no transport-cc on a pub PC)
        except ValueError:
            self.stats.drop("malformed_rtcp")
            return
        self.stats.add("rtcp_received")  # one per datagram: with the drops, all of them
        for p in packets:
            if not isinstance(p, rtcp.SenderReport):
                self.stats.add("rtcp_ignored")  # SDES, BYE, feedback on the pub PC, …
                continue
            track = self._by_ssrc.get(p.ssrc)
            if track is None:
                self.stats.drop("rtcp_unknown_ssrc")
                continue
            if p.ssrc != track.ssrc:
                self.stats.add("rtcp_ignored")  # the SR of its RTX stream: nothing to translate
                continue
            self.stats.add("sr_received")
            for slot, sr in track.on_sender_report(p):
                if slot.owner.sub.send_rtcp(sr):
                    self.stats.add("sr_sent")

    # --- sub: the participant receives --------------------------------------------------

    async def renegotiate(self) -> None:
        """Bring the sub PC up to date with the room's tracks, coalescing bursts.

        Every join, publish and leave in a room calls this for everyone else, so N
        participants joining together would cost each of them up to N offers, each one
        larger than the last (O(N²) SDP work on both sides). Changes are therefore folded
        into one offer: it goes out once no further change came for ``offer_quiet``
        seconds, or ``offer_max_delay`` after the oldest change waiting, whichever is first
        (LiveKit debounces its server-side negotiation likewise, 150 ms). On top of that,
        one offer is outstanding at a time: what changes while the client answers is
        offered after its answer (``on_sub_answer``).
        """
        self._dirty = True
        cfg = self.sfu.config
        if cfg.offer_quiet <= 0 and cfg.offer_max_delay <= 0:
            await self._maybe_offer()
            return
        now = time.monotonic()
        self._last_change = now
        if self._dirty_since is None:
            self._dirty_since = now
        if self._offer_timer is None and not self.closed:
            self._offer_due()

    def _offer_due(self) -> None:
        """The coalescing timer: offer once the changes have settled, else wait more."""
        self._offer_timer = None
        if self.closed:
            return
        cfg = self.sfu.config
        since = self._dirty_since if self._dirty_since is not None else self._last_change
        wait = min(self._last_change + cfg.offer_quiet, since + cfg.offer_max_delay) \
            - time.monotonic()
        if wait > 0:
            self._offer_timer = asyncio.get_running_loop().call_later(wait, self._offer_due)
        else:
            self.spawn(self._maybe_offer())

    async def _maybe_offer(self) -> None:
        # pub answers first: they let a publisher connect and send; sub offers wait
        await self.sfu.pubs_idle.wait()
        async with self._sub_lock, self.sfu.sdp_lock:
            if self.closed or self._awaiting_answer or not self._dirty:
                return
            self._dirty = False
            self._dirty_since = None
            changed = self._sync_slots()
            # a track that became (or stopped being) a screen share changes only the
            # offer's ``tracks`` map (docs/SFU.md "Screen sharing")
            screens = frozenset(str(slot.transceiver.mid)
                                for slot in self.slots if slot.track is not None
                                and slot.track.owner.is_screen(slot.track))
            if not changed and screens == self._offered_screens:
                return
            self._offered_screens = screens
            pc = self.sub.pc
            try:
                offer = await pc.createOffer()
                await pc.setLocalDescription(offer)
            except InvalidStateError:
                return  # the peer closed the sub PC under us: the watchdog reaps it
            self.sub.adopt()
            tracks = []
            for slot in self.slots:
                if slot.track is not None:
                    entry = {"mid": slot.transceiver.mid,
                             "participant": slot.track.owner.pid, "kind": slot.kind}
                    if slot.track.owner.is_screen(slot.track):
                        entry["source"] = "screen"
                    tracks.append(entry)
            self._awaiting_answer = True
            self.sub_offers += 1
            self.stats.add("sub_offers")
            sdp = pc.localDescription.sdp
            if self.sfu.config.bwe == "transport-cc":
                sdp = transportcc.offer(sdp)  # aiortc knows no transport-cc (the module)
            msg = {"type": "sfu-offer", "pc": "sub", "sdp": sdp, "tracks": tracks}
        await self.send(msg)  # outside the lock: the answer may come back re-entrantly
        if self.negotiated_at is None:
            self.negotiated_at = time.monotonic()

    def _sync_slots(self) -> bool:
        """Attach every wanted track to a slot, free slots of gone tracks. True if changed."""
        wanted = self.room.tracks_for(self)
        changed = False
        for slot in self.slots:
            t: Any = slot.transceiver
            if slot.track is None and t.direction == "sendonly":
                changed = True  # its track was closed under it (publisher left)
                slot.params = None
                t.direction = "inactive"
            if slot.track is not None and slot.track not in wanted:
                slot.detach()
                slot.params = None
                slot.transceiver.direction = "inactive"
                changed = True
        shown = {slot.track for slot in self.slots if slot.track is not None}
        for track in wanted:
            if track in shown:
                continue
            # A MID shows one participant for its whole life (docs/SFU.md "MIDs"): the
            # browser binds a receiver's decrypt transform to a participant once.
            free = next((s for s in self.slots if s.track is None and s.kind == track.kind
                         and s.publisher == track.owner.pid), None)
            if free is not None:
                slot = free
            else:
                t = self.sub.pc.addTransceiver(track.kind, direction="sendonly")
                # RFC 8830 §2: the msid's stream id groups a publisher's tracks, so the
                # browser makes one MediaStream per participant (aiortc's default is one
                # stream for the whole PC).
                t.sender._stream_id = _msid_token(track.owner.pid)
                t.sender._track_id = f"{t.sender._stream_id}-{track.kind}-{len(self.slots)}"
                caps = RTCRtpSender.getCapabilities(track.kind).codecs
                t.setCodecPreferences([c for c in caps if c.mimeType.lower() in
                                       (f"{track.kind}/{CODECS[track.kind]}",
                                        f"{track.kind}/rtx")])
                self.sub.adopt()
                slot = Slot(self, track.kind, t, self.stats)
                self.slots.append(slot)
            slot.transceiver.direction = "sendonly"
            slot.params = None  # no packets until the client has the new tracks map
            slot.attach(track)
            changed = True
        if changed:
            self.room.apply_last_n()
        return changed

    async def on_sub_answer(self, sdp: str) -> None:
        async with self._sub_lock:
            if not self._awaiting_answer:
                raise SfuError("unexpected-answer", "no sub offer is outstanding")
            try:
                async with self.sfu.sdp_lock:
                    if self.closed:  # left while waiting for its turn
                        return
                    await self.sub.pc.setRemoteDescription(
                        RTCSessionDescription(sdp=sdp, type="answer"))
            except Exception as exc:
                raise SfuError("bad-sdp", f"cannot apply the sub answer: {exc}") from exc
            self.sub.adopt()
            self._awaiting_answer = False
            self._slot_by_ssrc.clear()
            self._take_transport_cc(sdp)
            for slot in self.slots:
                t: Any = slot.transceiver
                if slot.track is not None and t.currentDirection == "sendonly":
                    params = negotiated(t)
                    if self.twcc is not None:  # aiortc leaves it out (sfu/transportcc.py)
                        params.ext_ids[URI_TWCC] = self.twcc.ext_id
                    slot.set_params(params)
                    self._slot_by_ssrc[slot.params.ssrc] = slot  # type: ignore[union-attr]
                    self._slot_by_ssrc[slot.params.rtx_ssrc] = slot  # type: ignore[union-attr]
        self.streams_changed()
        if self._offer_timer is None:  # else the changes are still being coalesced
            await self._maybe_offer()

    def _take_transport_cc(self, answer: str) -> None:
        """With ``--bwe transport-cc``, the first answer that accepts the extension starts
        this subscriber's send-side estimate (sfu/transportcc.py): every packet sent to it
        from now on is stamped, and its feedback replaces its REMB."""
        if self.twcc is not None or self.sfu.config.bwe != "transport-cc":
            return
        ext_id = transportcc.answered_id(answer)
        if ext_id is None or not 1 <= ext_id <= 14:  # (we offer 5: RFC 8285 §4.2's form)
            self.stats.add("twcc_declined")
            return
        self.twcc = TransportCc(ext_id, self.sub.sender)
        self.sub.stamp = self.twcc.stamp
        self.budget.delivery_gated = True

    def _sub_rtp(self, data: bytes) -> None:
        self.stats.drop("rtp_on_sub")  # the sub PC is sendonly from the SFU

    def _keep_rtcp_sender(self, peer: RawPeer, kept: set[int], data: bytes) -> None:
        """The SRTCP context is the first RTCP packet's sender SSRC (RFC 3711 §3.4), which
        a participant chooses freely: a PC keeps a few besides its tracks' SSRCs and
        forgets the rest (RawPeer.forget), whatever the packet turns out to hold."""
        sender = int.from_bytes(data[4:8], "big")
        if sender in kept or sender in self._by_ssrc:
            return
        if len(kept) < MAX_RTCP_SENDERS:
            kept.add(sender)
        else:
            self._forget(peer, sender)

    def _forget(self, peer: RawPeer, ssrc: int) -> None:
        if peer.forget(ssrc):
            self.stats.add("srtp_forgotten")

    def _sub_rtcp(self, data: bytes) -> None:
        """Feedback from a subscriber about the streams we send it."""
        self._keep_rtcp_sender(self.sub, self._sub_senders, data)
        try:
            # transport feedback only from a subscriber that was offered it, and bounded
            packets = rtcp.parse_compound(
                data, transportcc.MAX_REPORTED if self.twcc is not None else 0)
        except ValueError:
            self.stats.drop("malformed_rtcp")
            return
        self.stats.add("rtcp_received")  # one per datagram: with the drops, all of them
        for p in packets:
            if isinstance(p, rtcp.Pli | rtcp.Nack):
                slot = self._slot_by_ssrc.get(p.media_ssrc)
                if slot is None or slot.track is None:
                    self.stats.drop("rtcp_unknown_ssrc")
                elif isinstance(p, rtcp.Pli):
                    self.stats.add("pli_received")
                    (slot.source or slot.track).request_keyframe("pli")
                else:
                    self.stats.add("nacks_received")
                    slot.retransmit(p.lost, self.budget)
            elif isinstance(p, rtcp.Fir):
                for ssrc, _ in p.entries[:16]:
                    slot = self._slot_by_ssrc.get(ssrc)
                    if slot is None or slot.track is None:
                        self.stats.drop("rtcp_unknown_ssrc")
                    else:
                        self.stats.add("fir_received")
                        (slot.source or slot.track).request_keyframe("fir")
            elif isinstance(p, rtcp.Remb):
                # The total this subscriber's downlink carries, for all the SSRCs it
                # lists: its budget, never a limit for the publishers (docs/SFU.md).
                self.stats.add("remb_received")
                if self.twcc is None and self.budget.on_remb(p.bitrate, time.monotonic()):
                    self.reallocate()
            elif isinstance(p, rtcp.TransportFeedback):
                # what arrived and when (sfu/transportcc.py): our own estimate of the
                # downlink takes the REMB's place in the budget
                self.stats.add("twcc_feedback_received")
                assert self.twcc is not None  # (parsed only then)
                now = time.monotonic()
                estimate = self.twcc.on_feedback(p.arrivals, now)
                self.budget.on_delivered(self.twcc.delivered(now), self.twcc.estimator.loss,
                                         now)
                if self.budget.on_remb(estimate, now):
                    self.reallocate()
            elif isinstance(p, rtcp.ReceiverReport):
                self.stats.add("rr_received")
                for block in p.reports[:32]:
                    if block.ssrc in self._slot_by_ssrc:
                        self._reports[block.ssrc] = (block.highest_sequence,
                                                     block.cumulative_lost)
            else:
                self.stats.add("rtcp_ignored")  # SR (the sub PC sends nothing), SDES, BYE, …

    # --- liveness, reports ----------------------------------------------------------------

    def media_due(self) -> bool:
        """Whether this participant has been given a reason to send media or RTCP.

        - Its sub PC is up and the SFU has sent it media: a receiver reports on what it
          receives (RFC 3550 §6.4.2 receiver reports; browsers send them every second or
          so, with their NACKs and PLIs).
        - Its pub PC is up and one of its tracks has a subscriber that can receive it (an
          applied answer on a sub PC that is up): from then on a publisher sends its media
          (and sender reports, RFC 3550 §6.4.1). Before, nobody would receive it, and a
          client may rightly hold it back (the benchmark's generator does until the whole
          room is in; clients that pause unsubscribed tracks do).

        A participant that is connected but has no reason to send yet is therefore never
        idle. A dead one is still found: by the idle clock once anything is due, and before
        that by ICE consent freshness (RFC 7675 §5.1: aioice gives up after six unanswered
        checks, ~30 s, and the PC fails).
        """
        if self.sub.up and any(s.lane.packets for s in self.slots):
            return True
        if self.pub.up:
            for track in self.tracks.values():
                for slot in track.slots:
                    if slot.params is not None and slot.owner.sub.up:
                        return True
        return False

    async def _watch(self) -> None:
        """RR + REMB to the publisher every rtcp_interval; detect dead transports."""
        cfg = self.sfu.config
        last_seen = (-1, time.monotonic())
        while not self.closed:
            await asyncio.sleep(cfg.rtcp_interval)
            now = time.monotonic()
            states = {self.pub.pc.connectionState, self.sub.pc.connectionState}
            if "failed" in states:
                await self.sfu.transport_failed(self, "ICE/DTLS failed")
                return
            if "closed" in states:
                # aiortc closes the PC when the peer sends DTLS close_notify, and when aioice
                # gives up on ICE consent (RFC 7675 §5.1: six checks unanswered for 0.5 s
                # each, ~30 s): a peer that left, or one whose answers stopped or came late
                await self.sfu.transport_failed(
                    self, "the connection was closed (DTLS close_notify or ICE consent expired)")
                return
            connected = self.pub.up or self.sub.up
            received = self.pub.received + self.sub.received
            if self.due_since is None and connected and self.media_due():
                self.due_since = now  # the idle clock starts here, not at the join
                last_seen = (received, now)
            if received != last_seen[0]:
                last_seen = (received, now)
            if (self.due_since is not None and connected
                    and now - last_seen[1] > cfg.idle_timeout):
                await self.sfu.transport_failed(self, "no media or RTCP received")
                return
            if (not connected and self.negotiated_at is not None
                    and now - self.negotiated_at > cfg.connect_timeout):
                await self.sfu.transport_failed(self, "ICE/DTLS did not connect")
                return
            for track in self.tracks.values():
                for stream in track.streams():
                    stream.measure(now)
            self._send_reports(now)
            self._measure_sent(now)
            fraction, reported = self._interval_loss()
            self.budget.on_loss(fraction, now, reported)
            self.reallocate()
            self.update_layers(now)

    def _send_reports(self, now: float) -> None:
        """RFC 3550 §6.4.2 RR for each published source, plus REMB (draft-alvestrand §2).

        The REMB is the configured ceiling, the same whoever subscribes: a publisher's
        rate follows its own uplink (its loss-based controller reads the loss and jitter
        of these RRs) and never the weakest subscriber's downlink, which has its own
        budget (sfu/allocator.py).
        """
        if not self.pub.up:
            return
        streams = [s for t in self.tracks.values() for s in t.streams()]
        blocks = [b for b in (s.report_block() for s in streams) if b is not None]
        if not blocks:
            return
        data = bytes(rtcp.ReceiverReport(self.rtcp_ssrc, blocks[:31]))
        video = [s.ssrc for s in streams if s.kind == "video" and s.ssrc is not None]
        if video:
            data += bytes(rtcp.Remb(self.rtcp_ssrc, self.sfu.config.max_video_bitrate, video))
        if self.pub.send_rtcp(data):
            self.stats.add("rr_sent")

    # --- the downlink budget (sfu/allocator.py) -------------------------------------------

    def _measure_sent(self, now: float) -> None:
        """What this subscriber was sent in the last interval, bits/s: media and RTX
        (``budget.sent``), and with probe padding (``budget.sent_total``; the padding
        packets' RTP bytes, without the SRTP tag and UDP/IP: an upgrade is proven on a
        little less than went out, never more)."""
        total = sum(s.lane.octets + RTP_OVERHEAD * s.lane.packets + s.rtx_octets
                    for s in self.slots)
        mark, padding, then = self._sent_mark
        self._sent_mark = (total, self.padding_octets, now)
        if now > then and total >= mark:
            self.budget.sent = int((total - mark) * 8 / (now - then))
            self.budget.sent_total = self.budget.sent + int(
                (self.padding_octets - padding) * 8 / (now - then))

    def _interval_loss(self) -> tuple[int, bool]:
        """The share of our packets the subscriber lost on its link since the last call
        (1/256), and whether its receiver reports covered any packet since. Holes its
        publisher's uplink left and the SFU could not repair reach
        the subscriber as losses too; they are not this link's, so they are taken out."""
        expected = lost = 0
        marks: dict[int, tuple[int, int, int]] = {}
        for slot in self.slots:
            if slot.params is None or slot.track is None:
                continue
            ssrc = slot.params.ssrc
            report = self._reports.get(ssrc)
            if report is None:
                continue
            highest, cumulative = report
            source = slot.source or slot.track
            marks[ssrc] = (highest, cumulative, source.unrepaired)
            mark = self._reports_mark.get(ssrc)
            if mark is not None and 0 <= highest - mark[0] < 1 << 16:
                expected += highest - mark[0]
                lost += max(0, cumulative - mark[1] - (source.unrepaired - mark[2]))
        self._reports_mark = marks
        # what our own pacer dropped is not the link's loss either (and counting it would
        # lower the estimate, hence the pacing rate, hence drop more)
        lost = max(0, lost - (self.pacer.dropped - self._pacer_dropped_mark))
        self._pacer_dropped_mark = self.pacer.dropped
        return (min(255, (lost << 8) // expected), True) if expected > 0 else (0, False)

    def reallocate(self) -> None:
        """Fit the video this subscriber may see (last-N allows) into its budget."""
        if self.closed:
            return
        now = time.monotonic()
        budget = self.budget
        audio = sum(s.track.bitrate for s in self.slots
                    if s.kind == "audio" and s.track is not None)
        order = self.room.priority
        # screen shares first, then cameras by last-spoken order (docs/SFU.md "Loss and
        # congestion")
        candidates = sorted((s for s in self.slots if s.kind == "video" and s.track is not None
                             and s.lastn_ok),
                            key=lambda s: (s.track is None or not s.track.owner.is_screen(s.track),
                                           order(s.publisher or "")))
        selectable = [self._selectable(s, now) for s in candidates]
        # simulcast: (layer, temporal layer) steps, cheapest first (sfu/allocator.py ladder)
        # layers above the one forwarded count at their peak rate (track.py PEAK_INTERVALS):
        # an upgrade must not be judged on one interval in which the publisher was slow
        # (each layer above the lowest also at TID <= 1: its half_rates)
        ladders = [ladder([x.bitrate if x.index <= (s.source.index if s.source else -1)
                           else x.peak_bitrate for x in layers], layers[0].temporal_rates,
                          [x.temporal_rates[1] if len(x.temporal_rates) > 1 else 0
                           for x in layers])
                   if layers else [] for s, layers in zip(candidates, selectable, strict=True)]
        videos = [Video(s, steps[0].rate, s.fits, tuple(x.rate for x in steps),
                        next((j for j, x in enumerate(steps) if layers[x.layer] is s.source
                              and x.tid == s.temporal), -1),
                        next((j for j, x in enumerate(steps) if x.tid is None), 0),
                        tuple(steps))
                  if layers else Video(s, s.track.bitrate if s.track else 0, s.fits)
                  for s, layers, steps in zip(candidates, selectable, ladders, strict=True)]
        allowed = budget.plan(audio, videos, now)
        for i, slot in enumerate(candidates):
            fits = i in allowed
            if fits != slot.fits:
                slot.allow(fits=fits)
                self.stats.add("bwe_resumes" if fits else "bwe_pauses")
        chosen = budget.choose_layers(videos, allowed, now)
        for i, (slot, layers) in enumerate(zip(candidates, selectable, strict=True)):
            if layers:
                step = ladders[i][chosen.get(i, 0)]
                slot.select(layers[step.layer], now)
                if i in chosen:  # a paused one keeps its target until it resumes
                    slot.set_temporal(step.tid)
                slot.ask_switch_key(now)
        # a probe for the first paused stream, else for the first layer upgrade due
        upgrade = len(allowed) == len(videos)
        target = (budget.upgrade_target(videos, chosen, now) if upgrade
                  else budget.waiting(audio, videos, allowed, now))
        self._pace(now)
        self._probe_bps = budget.probe_rate(target, now, upgrade)
        if self._probe_bps and (self._prober is None or self._prober.done()):
            self.stats.add("probes_started")
            self._prober = asyncio.ensure_future(self._probe())
        if budget_log.isEnabledFor(logging.DEBUG):
            budget_log.debug(
                "%s estimate=%s remb=%s proven=%d allocated=%d sent=%d sent_total=%d "
                "carrying=%s loss=%d congested=%s pacer=%d queued=%d pacer_dropped=%d "
                "probe=%d target=%d videos=%s", self.pid, budget.known(now), budget.remb,
                budget.proven, budget.allocated, budget.sent, budget.sent_total,
                budget.carrying(now),
                budget.loss, budget.congested(now), self.pacer.rate, self.pacer.queued,
                self.pacer.dropped, self._probe_bps, budget.probe_target,
                " ".join(f"{s.publisher}:"
                         f"{getattr(s.source, 'rid', '-') if s.fits else 'paused'}"
                         f"/{s.temporal}[{','.join(str(r // 1000) for r in v.layers)}]"
                         for s, v in zip(candidates, videos, strict=True)))
        self.streams_changed()

    def _selectable(self, slot: Slot, now: float) -> list[PublishedTrack]:
        """The layers of a simulcast slot's track it may get, lowest first (docs/SFU.md
        "Simulcast"): those sent lately whose height (from their key frames) is within
        the slot's ``max_height``; the lowest layer sent lately always is. [] when the
        track is not simulcast."""
        track = slot.track
        if track is None or not track.layers:
            return []
        live = [x for x in track.layers if x.live(now)] or track.layers[:1]
        if slot.max_height is None:
            return live
        return [x for x in live if 0 < x.height <= slot.max_height] or live[:1]

    def set_video_constraints(self, mid: object, height: object) -> None:
        """``sfu-video-constraints``: the subscriber shows the video of its sub ``mid`` at
        most ``height`` pixels high (None: no limit); the next allocation follows."""
        if not isinstance(mid, str) or not (height is None or (
                isinstance(height, int) and not isinstance(height, bool)
                and 0 <= height <= 100_000)):
            raise SfuError("bad-message", "sfu-video-constraints needs a string mid and a "
                                          "height of 0..100000 or null")
        slot = next((s for s in self.slots if s.kind == "video" and s.params is not None
                     and s.params.mid == mid), None)
        if slot is None:
            raise SfuError("unknown-mid", "no video with this mid in your sub session")
        slot.max_height = height
        self.stats.add("video_constraints")
        self.reallocate()
        if slot.track is not None:  # a bigger tile resumes its publisher's layer at once
            slot.track.owner.update_layers(time.monotonic())

    def update_layers(self, now: float) -> None:
        """Dynacast (sfu/dynacast.py, docs/SFU.md "Dynacast"): tell this publisher which
        of its simulcast layers to send, when that changed."""
        if self.closed:
            return
        for mid, dynacast in self._dynacast.items():
            track = self.tracks.get(mid)
            if track is None or not track.layers:
                continue
            before = dynacast.active
            change = dynacast.update(needed(track.layers, track.slots), now)
            if change is None:
                continue
            for was, now_on in zip(before, dynacast.active, strict=True):
                if was != now_on:
                    self.stats.add("dynacast_resumes" if now_on else "dynacast_pauses")
            self.spawn(self.send({"type": "sfu-layers", "mid": mid, "layers": change}))

    def _pace(self, now: float) -> None:
        """Pace this subscriber's packets while its link has shown loss lately (the
        allocator's estimate sets the rate, sfu/pacer.py); otherwise the fast path."""
        estimate = self.budget.known(now)
        paced = estimate is not None and now - self.budget.congested_at < PACE_AFTER_LOSS
        if paced and estimate is not None:
            self.pacer.rate = int(max(estimate, self.budget.allocated) * PACING_FACTOR)
        elif self.pacer.rate:
            self.pacer.flush()
            self.pacer.rate = 0
        if paced != self._paced:
            self._paced = paced
            self.stats.add("pacing_on" if paced else "pacing_off")  # per subscriber
        for slot in self.slots:  # slots attached since are set here too
            slot.lane.paced = paced

    async def _probe(self) -> None:
        """Send padding at ``_probe_bps`` in ``PROBE_STEP`` steps while a probe runs
        (bounded by the allocator's ``PROBE_LENGTH``, re-decided every report interval)."""
        step = PROBE_STEP
        owed = 0.0
        last = time.monotonic()
        for _ in range(PROBE_STEPS):
            if self.closed or not self._probe_bps:
                return
            video = [s for s in self.slots if s.kind == "video" and s.params is not None
                     and s.params.rtx_payload_type is not None]
            if not video:
                return
            slot = next((s for s in video if s.active and s.lane.started), video[0])
            # what the time since the last step owes, not one nominal step: the sleep
            # below wakes late on a busy loop, and counting steps sent about half the
            # rate asked for (measured: 48-50 % over whole bench runs), as the pacer's
            # drains did before its catch-up (sfu/pacer.py CATCH_UP)
            now = time.monotonic()
            elapsed, last = min(now - last, PROBE_CATCH_UP), now
            rate = min(self._probe_bps, PROBE_MAX)
            owed = min(owed + rate * elapsed / 8, rate * PROBE_CATCH_UP / 8)
            count = min(int(PROBE_BURST * max(1.0, elapsed / step)),
                        int(owed // PADDING_PACKET))
            if count:
                sent = slot.pad(count, PADDING_PACKET - 40, now)
                owed = max(0.0, owed - sent) if sent else 0.0
                self.padding_octets += sent
                self.stats.add("probes_sent", count)
            await asyncio.sleep(step)

    def streams_changed(self) -> None:
        """Tell the subscriber which streams are paused and why, once per change."""
        if not self._announcing and any(s.announced != s.paused_reason for s in self.slots
                                        if s.track is not None):
            self._announcing = True
            self.spawn(self._announce())

    async def _announce(self) -> None:
        try:
            for slot in list(self.slots):
                track, reason = slot.track, slot.paused_reason
                if track is None or slot.announced == reason or slot.params is None:
                    continue
                slot.announced = reason
                msg: dict[str, Any] = {"type": "stream-state", "participant": track.owner.pid,
                                       "kind": slot.kind, "mid": slot.params.mid,
                                       "state": "paused" if reason else "active"}
                if reason:
                    msg["reason"] = reason
                await self.send(msg)
        finally:
            self._announcing = False
        self.streams_changed()  # anything that changed while this was sending

    async def close(self) -> None:
        """Release everything: tasks, slots, caches, both PCs and their sockets."""
        if self.closed:
            return
        self.closed = True
        self._watchdog.cancel()
        if self._offer_timer is not None:
            self._offer_timer.cancel()
            self._offer_timer = None
        if self._prober is not None:
            self._prober.cancel()
        self.pacer.close()
        for task in list(self._tasks):
            task.cancel()
        for track in self.tracks.values():
            track.close()
        for slot in self.slots:
            slot.detach()
        self.tracks.clear()
        self._by_ssrc.clear()
        self.slots.clear()
        self._slot_by_ssrc.clear()
        for peer in (self.pub, self.sub):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(peer.close(), 5.0)
        pending = [t for t in (*self._tasks, self._watchdog) if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=2.0)


def _media_ssrcs(sdp: SessionDescription, mid: str) -> tuple[int | None, int | None]:
    """The primary SSRC of an m-line (the first a=ssrc that is not an RTX one) and its RTX
    SSRC (RFC 5576 §4.2: ``a=ssrc-group:FID primary rtx``, RFC 4588 §8.3)."""
    for media in sdp.media:
        if media.rtp.muxId != mid:
            continue
        fid = {int(g.items[0]): int(g.items[1]) for g in media.ssrc_group
               if g.semantic == "FID" and len(g.items) > 1}
        rtx = set(fid.values())
        for s in media.ssrc:
            if s.ssrc not in rtx:
                return int(s.ssrc), fid.get(int(s.ssrc))
    return None, None


_MSID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        "!#$%&'*+-.^_`{|}~")


def _msid_token(pid: str) -> str:
    """``pid`` as an RFC 8830 §2 msid-id (1*64 token-char); others are hashed to one."""
    if 0 < len(pid) <= 48 and set(pid) <= _MSID_CHARS:
        return pid
    return "p-" + hashlib.sha256(pid.encode()).hexdigest()[:32]
