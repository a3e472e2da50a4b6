"""The media plane's entry point: rooms of participants, driven by signaling messages."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from .config import SfuConfig
from .errors import SfuError
from .ice import IcePolicy
from .outbox import Outbox
from .participant import Participant, Send
from .pauses import PauseMeter
from .room import Room
from .stats import Stats

logger = logging.getLogger(__name__)

MAX_SDP = 256 * 1024  # a sub answer grows ~1.1-1.7 KB per publisher (docs/SFU.md)


class Sfu:
    """Forwards each participant's RTP to every other participant of its room."""

    def __init__(self, config: SfuConfig | None = None) -> None:
        self.config = config or SfuConfig()
        self.ice = IcePolicy(self.config.bind_host, self.config.announced_host,
                             self.config.port_min, self.config.port_max)
        self.counters = Stats()
        self.outbox = Outbox(self.counters) if self.config.send_batching else None
        self._background: set[asyncio.Future[None]] = set()
        self.rooms: dict[str, Room] = {}
        self.participants: dict[str, Participant] = {}
        # SDP work (aiortc: tens of ms per offer or answer of a large room) is done one
        # negotiation at a time, not interleaved: interleaved, every ICE check and DTLS
        # flight of every participant waits behind a slice of each pending one, and in a
        # join storm nobody connects for seconds (docs/SFU.md "Join storms")
        self.sdp_lock = asyncio.Lock()
        # pub offers waiting for it go first (sub offers wait for pubs_idle): a pub
        # answer lets a publisher connect and send, a sub offer only adds a track
        self.pubs_waiting = 0
        self.pubs_idle = asyncio.Event()
        self.pubs_idle.set()
        self._pauses: PauseMeter | None = None  # runs while any room is open
        # Everything allocated so far (imported modules: aiortc, av, cryptography, …) lives
        # as long as the process. Moving it out of the cyclic GC's reach makes each full
        # collection ~20 ms shorter: those collections stop the forwarding loop, and a
        # 20 ms stop every few seconds is the p99 latency of every packet behind it.
        gc.freeze()

    async def join(self, room: str, pid: str, send: Send) -> None:
        """Register a participant; it gets a sub offer once somebody else publishes."""
        if pid in self.participants:
            await self.leave(pid)
        r = self.rooms.get(room)
        if r is None:
            r = self.rooms[room] = Room(self, room)
            if self._pauses is None:
                self._pauses = PauseMeter(self.counters)
        p = Participant(self, r, pid, send)
        self.participants[pid] = p
        r.add(p)
        self.counters.add("joins")
        logger.info("%s joined room %s", pid, room)
        await p.renegotiate()

    async def handle(self, pid: str, msg: dict[str, Any]) -> None:
        """One client message whose type starts with ``sfu-``; never raises."""
        p = self.participants.get(pid)
        try:
            if p is None:
                raise SfuError("not-joined", "join the media session first")
            if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                raise SfuError("bad-message", "a message is an object with a string type")
            kind = msg["type"]
            if kind in ("sfu-offer", "sfu-answer"):
                sdp = msg.get("sdp")
                want = "pub" if kind == "sfu-offer" else "sub"
                if msg.get("pc") != want:
                    raise SfuError("bad-message", f"{kind} needs pc={want!r}")
                if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP:
                    raise SfuError("bad-message", "sdp must be a non-empty string ≤ 256 KiB")
                if kind == "sfu-offer":
                    screen = msg.get("screen")
                    if screen is not None and not (isinstance(screen, str)
                                                   and 1 <= len(screen) <= 32):
                        raise SfuError("bad-message", "screen must be a MID or null")
                    await p.on_pub_offer(sdp, screen)
                else:
                    await p.on_sub_answer(sdp)
            elif kind == "sfu-keyframe":
                for track in p.tracks.values():
                    track.request_keyframe("client")
            elif kind == "sfu-video-constraints":
                p.set_video_constraints(msg.get("mid"), msg.get("height"))
            else:
                raise SfuError("unknown-type", f"unknown message type {kind[:40]!r}")
        except SfuError as exc:
            await self._error(pid, p, exc.id, exc.message)
        except Exception as exc:
            logger.exception("handling %s from %s", msg.get("type") if isinstance(msg, dict)
                             else type(msg).__name__, pid)
            await self._error(pid, p, "internal", f"internal error: {type(exc).__name__}")

    async def _error(self, pid: str, p: Participant | None, id: str, message: str) -> None:
        self.counters.add("errors")
        self.counters.add("error_" + id)
        logger.info("sfu-error %s to %s: %s", id, pid, message)
        if p is not None:
            await p.send({"type": "sfu-error", "id": id, "message": message})

    async def leave(self, pid: str) -> None:
        """Release everything of ``pid`` and tell the others (re-offer + sfu-left)."""
        p = self.participants.pop(pid, None)
        if p is None:
            return
        room = p.room
        room.remove(p)
        had_tracks = bool(p.tracks)
        await p.close()
        self.counters.add("leaves")
        logger.info("%s left room %s", pid, room.name)
        if not room.participants:
            self.rooms.pop(room.name, None)
            await room.close()
            if not self.rooms:
                self._stop_pauses()
            return
        for other in list(room.participants.values()):
            await other.send({"type": "sfu-left", "participant": pid})
        if had_tracks:
            await room.tracks_changed()
        room.apply_last_n()

    async def transport_failed(self, p: Participant, why: str) -> None:
        """ICE/DTLS failure or silence: the participant is gone as far as media goes."""
        self.counters.add("transport_failures")
        logger.info("%s: transport failed (%s)", p.pid, why)
        await p.send({"type": "sfu-error", "id": "transport-failed", "message": why})
        if self.participants.get(p.pid) is p:
            task = asyncio.ensure_future(self.leave(p.pid))  # not awaited: it cancels our caller
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=10.0)
        for pid in list(self.participants):
            await self.leave(pid)
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()
        self._stop_pauses()
        if self.outbox is not None:
            self.outbox.flush()

    def _stop_pauses(self) -> None:
        if self._pauses is not None:
            self._pauses.close()
            self._pauses = None

    def accepting(self) -> bool:
        """In-process SFU: it lives as long as the server does."""
        return True

    def gauges(self) -> dict[str, int]:
        """Rooms, participants, publishers, subscribers and tracks, now (``/metrics``)."""
        participants = list(self.participants.values())
        return {
            "rooms": len(self.rooms),
            "participants": len(participants),
            "publishers": sum(1 for p in participants if p.tracks),
            "subscribers": sum(1 for p in participants if p.slots),
            "published_tracks": sum(len(p.tracks) for p in participants),
        }

    def stats(self) -> dict[str, int]:
        """Counters: forwarded packets/bytes, drops by reason, PLIs, NACKs, RTX, errors."""
        out = self.counters.snapshot()
        if self.outbox is not None:
            out.update(self.outbox.counters())
        return out
