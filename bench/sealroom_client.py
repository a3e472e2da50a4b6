"""The generator's side of ``bench.sfu_runner``: join, publish, answer sub offers.

Publishing is not serialised: every participant's pub offer is made first, then all are
sent at once, so the SFU handles the publishes back to back and coalesces the sub
re-offers they cause (docs/SFU.md "Join storms"). Before, each offer was made only after
the previous one had been sent, on the loop that also answered the sub offers every
handled publish caused (up to 110 KB of SDP each at N = 50): publishing 50 took tens of
seconds, long enough for the SFU's idle clock to reap participants that were connected
but not yet sending.

The ``joinstorm`` scenario (``storm``): participant ``i`` of ``N`` joins and publishes at
``i · S / (N − 1)`` seconds (``--join-within S``), as browsers would, and starts its media
as soon as its publishing transport is up; the storm's figures are returned with the
``published`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any

from sfu.ice import IcePolicy

from .gen import Participant, Tally
from .rtc import Peers, wait_until
from .scenarios import Scenario

logger = logging.getLogger("bench.sealroom_client")
ROOM = "bench"


class SealroomClient:
    def __init__(self, host: str, port: int, bind: str, scenario: Scenario,
                 join_within: float = 0.0) -> None:
        self.host = host
        self.join_within = join_within  # joinstorm: every join falls in this many seconds
        self.storm: dict[str, Any] | None = None  # joinstorm: the storm's figures
        self.port = port
        self.ice = IcePolicy(bind)
        self.scenario = scenario
        self.peers: dict[str, Peers] = {}
        self.tally: Tally | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Future[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()
        # One sub offer answered at a time, over all participants (see _dispatch)
        self._answering = asyncio.Lock()

    def _send(self, obj: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write((json.dumps(obj) + "\n").encode())

    async def publish(self, parts: list[Participant]) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                   limit=1 << 24)
        self._task = asyncio.ensure_future(self._read())
        self.tally = parts[0].tally if parts else None
        if self.scenario.name == "joinstorm":
            await self._storm(parts)
            return
        for part in parts:  # join in index order: the room's join order (last-N)
            self.peers[part.pid] = Peers(part, self.ice)
            self.peers[part.pid].joined_at = time.monotonic()
            self._send({"op": "join", "pid": part.pid,
                        "room": self.scenario.room_name(part.index)})
        # every offer first, then all of them: nothing awaited between two sends
        publishers = [self.peers[p.pid] for p in parts if p.streams]
        sdps = await asyncio.gather(*(peers.pub_offer() for peers in publishers))
        for peers, sdp in zip(publishers, sdps, strict=True):
            self._send({"op": "msg", "pid": peers.part.pid,
                        "msg": {"type": "sfu-offer", "pc": "pub", "sdp": sdp}})
        assert self.tally is not None or not parts
        if self.tally is not None:
            await wait_until(list(self.peers.values()), self.tally, True, False,
                             30.0 + len(parts))

    async def subscribe(self, parts: list[Participant]) -> None:
        if self.tally is None:
            return
        # only participants that should receive something get a sub PeerConnection
        wanted = [self.peers[p.pid] for p in parts if self.scenario.expected_sources(p.index)]
        await wait_until(wanted, self.tally, True, True, 30.0 + 2.0 * len(parts))

    async def _storm(self, parts: list[Participant]) -> None:
        """Join ``parts`` spread evenly over ``join_within`` seconds (index order, which
        is the room's join order), each publishing at once; take every transport over as
        it comes up (media starts then: the pacer already runs); return when everybody is
        connected and has heard a forwarded packet, or at a bounded deadline."""
        assert self.tally is not None
        tally = self.tally
        n = len(parts)
        start = time.monotonic()
        deadline = start + self.join_within + 30.0 + n
        offers: list[asyncio.Future[None]] = []

        async def publish(peers: Peers) -> None:
            sdp = await peers.pub_offer()
            self._send({"op": "msg", "pid": peers.part.pid,
                        "msg": {"type": "sfu-offer", "pc": "pub", "sdp": sdp}})

        def poll() -> bool:
            """Take over what came up, note who heard something; True when all done."""
            now = time.monotonic()
            done = True
            for peers in self.peers.values():
                peers.try_take_over(tally)
                part = peers.part
                wants_sub = bool(self.scenario.expected_sources(part.index))
                if (peers.connected_at is None and (not part.streams or peers.pub_taken)
                        and (not wants_sub or peers.sub_taken)):
                    peers.connected_at = now
                if peers.first_packet_at is None and wants_sub and part.seen:
                    peers.first_packet_at = now
                if peers.errors:
                    continue  # failed (counted below): nothing more to wait for
                if peers.connected_at is None or (wants_sub and peers.first_packet_at is None):
                    done = False
            return done and len(self.peers) == n

        async def joins() -> None:
            for k, part in enumerate(parts):
                at = start + (self.join_within * k / (n - 1) if n > 1 else 0.0)
                while time.monotonic() < at:  # keep taking over while the storm goes on
                    await asyncio.sleep(min(0.02, max(0.0, at - time.monotonic())))
                peers = self.peers[part.pid] = Peers(part, self.ice)
                peers.joined_at = time.monotonic()
                self._send({"op": "join", "pid": part.pid,
                            "room": self.scenario.room_name(part.index)})
                if part.streams:
                    offers.append(asyncio.ensure_future(publish(peers)))

        joining = asyncio.ensure_future(joins())
        try:
            while time.monotonic() < deadline:
                if poll() and joining.done():
                    break
                await asyncio.sleep(0.02)  # the figures below are ±20 ms
        finally:
            if not joining.done():
                joining.cancel()
            await asyncio.gather(joining, *offers, return_exceptions=True)
        self.storm = storm_figures(list(self.peers.values()), n, self.join_within, start,
                                   self.scenario)
        logger.info("join storm: %s", self.storm)

    def setup_figures(self) -> dict[str, Any]:
        """Sub offers answered so far (total, per participant, most to one) and the
        sfu-errors received, by id and message."""
        offers = [p.sub_offers for p in self.peers.values()]
        errors: dict[str, int] = {}
        for p in self.peers.values():
            for eid, text in p.errors:
                errors[f"{eid}: {text}"] = errors.get(f"{eid}: {text}", 0) + 1
        return {"sub_offers_total": sum(offers),
                "sub_offers_per_participant": round(sum(offers) / len(offers), 2)
                if offers else None,
                "sub_offers_max": max(offers) if offers else None, "errors": errors}

    def keepalive(self, parts: list[Participant], pub: bool = False) -> None:
        for p in parts:
            peers = self.peers.get(p.pid)
            if peers is not None:
                peers.keepalive(pub)

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                return
            obj = json.loads(line)
            peers = self.peers.get(obj.get("pid", ""))
            if peers is None:
                continue
            task = asyncio.ensure_future(self._dispatch(peers, obj["msg"]))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _dispatch(self, peers: Peers, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        try:
            if kind == "sfu-answer" and msg.get("pc") == "pub":
                await peers.pub_answer(msg["sdp"])
            elif kind == "sfu-offer" and msg.get("pc") == "sub":
                # One process plays N clients on one loop. Answered concurrently, N offers
                # of up to ~140 KB (~0.15 s of aiortc each) take turns on the loop, and so
                # every ICE check and DTLS flight waits behind a slice of each of them: in
                # a storm of 50 nobody connected for 10 s. One browser answers its own
                # offers on its own CPU and its transports meanwhile; one at a time is the
                # closest a shared loop gets to that.
                async with self._answering:
                    answer = await peers.sub_offer(msg["sdp"])
                self._send({"op": "msg", "pid": peers.part.pid,
                            "msg": {"type": "sfu-answer", "pc": "sub", "sdp": answer}})
                self._constrain(peers, msg.get("tracks"))
            elif kind == "sfu-error":
                # the id and the message: "transport-failed" alone does not tell an ICE/DTLS
                # timeout from the idle clock (docs/SFU.md "Error ids")
                peers.errors.append((str(msg.get("id")), str(msg.get("message"))[:200]))
                logger.warning("%s: sfu-error %s: %s", peers.part.pid, msg.get("id"),
                               msg.get("message"))
        except Exception:
            logger.exception("%s: handling %s", peers.part.pid, kind)

    def _constrain(self, peers: Peers, tracks: Any) -> None:
        """simulcast: for each video MID new in this sub offer, the tile height this
        subscriber shows its publisher at (``sfu-video-constraints``, docs/SFU.md), the
        height of the layer the scenario has it ask for (Scenario.layer_for). Sent after
        the answer, on the same ordered channel: the SFU knows the MID by then."""
        if not isinstance(tracks, list):
            return
        for t in tracks:
            if not isinstance(t, dict) or t.get("kind") != "video":
                continue
            mid, who = t.get("mid"), str(t.get("participant"))
            if not isinstance(mid, str) or mid in peers.constrained or not who[1:].isdigit():
                continue
            publisher = self.scenario.members[int(who[1:])]
            if not publisher.layers:
                continue
            layer = publisher.layers[self.scenario.layer_for(peers.part.index,
                                                             publisher.index)]
            peers.constrained.add(mid)
            self._send({"op": "msg", "pid": peers.part.pid,
                        "msg": {"type": "sfu-video-constraints", "mid": mid,
                                "height": layer.height}})

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                for pid in self.peers:
                    self._send({"op": "leave", "pid": pid})
                await self._writer.drain()
        for peers in self.peers.values():
            await peers.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
        self.peers.clear()


def _quantile(values: list[float], q: float) -> float | None:
    """The nearest-rank q-quantile (0..1) of ``values``; None if there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def storm_figures(peers: list[Peers], n: int, within: float, start: float,
                  scenario: Scenario) -> dict[str, Any]:
    """What a join storm cost: when everybody was connected, join → first forwarded
    packet, who failed and why, and the sub offers each participant had to answer."""
    connected = [p.connected_at - start for p in peers if p.connected_at is not None]
    first = [p.first_packet_at - p.joined_at for p in peers
             if p.first_packet_at is not None and p.joined_at is not None]
    to_connect = [p.connected_at - p.joined_at for p in peers
                  if p.connected_at is not None and p.joined_at is not None]
    failed = [p for p in peers if p.errors or p.connected_at is None or (
        scenario.expected_sources(p.part.index) and p.first_packet_at is None)]
    errors: dict[str, int] = {}
    messages: dict[str, int] = {}
    for p in peers:
        for eid, text in p.errors:
            errors[eid] = errors.get(eid, 0) + 1
            messages[f"{eid}: {text}"] = messages.get(f"{eid}: {text}", 0) + 1
    offers = [p.sub_offers for p in peers]

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "participants": n, "joined": len(peers), "join_within_s": within,
        "all_connected_s": r(max(connected)) if len(connected) == n else None,
        "connected": len(connected),
        "join_to_connected_p50_s": r(_quantile(to_connect, 0.5)),
        "join_to_connected_p99_s": r(_quantile(to_connect, 0.99)),
        "join_to_first_packet_p50_s": r(_quantile(first, 0.5)),
        "join_to_first_packet_p99_s": r(_quantile(first, 0.99)),
        "join_to_first_packet_max_s": r(max(first)) if first else None,
        "failures": len(failed), "failed": sorted(p.part.pid for p in failed)[:20],
        "errors": errors, "error_messages": messages,
        "sub_offers_total": sum(offers),
        "sub_offers_per_participant": r(sum(offers) / len(offers)) if offers else None,
        "sub_offers_max": max(offers) if offers else None,
        # per participant, seconds since the storm began: joined, connected, first packet
        "timeline": {p.part.pid: [r(None if t is None else t - start) for t in
                                  (p.joined_at, p.connected_at, p.first_packet_at)]
                     + [p.sub_offers] for p in peers},
    }


class MediaRelayClient(SealroomClient):
    """``bench.mediarelay``: real VP8/Opus (it decodes), and an explicit subscribe."""

    reencodes = True

    async def publish(self, parts: list[Participant]) -> None:
        from .media import encoded_opus, encoded_vp8

        cache: dict[tuple[str, int, float], list[bytes]] = {}
        for part in parts:
            for s in part.streams:
                key = (s.spec.kind, s.spec.bitrate, s.spec.rate)
                if key not in cache:
                    cache[key] = (encoded_vp8(90, s.spec.bitrate, s.spec.rate)
                                  if s.spec.kind == "video" else encoded_opus(50))
                s.real = cache[key]
        await super().publish(parts)

    async def subscribe(self, parts: list[Participant]) -> None:
        for p in parts:
            if self.scenario.expected_sources(p.index):
                self._send({"op": "msg", "pid": p.pid, "msg": {"type": "sfu-subscribe"}})
        await super().subscribe(parts)
