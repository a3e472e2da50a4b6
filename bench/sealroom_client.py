"""The generator's side of ``bench.sfu_runner``: join, publish, answer sub offers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from sfu.ice import IcePolicy

from .gen import Participant, Tally
from .rtc import Peers, wait_until
from .scenarios import Scenario

logger = logging.getLogger("bench.sealroom_client")
ROOM = "bench"


class SealroomClient:
    def __init__(self, host: str, port: int, bind: str, scenario: Scenario) -> None:
        self.host = host
        self.port = port
        self.ice = IcePolicy(bind)
        self.scenario = scenario
        self.peers: dict[str, Peers] = {}
        self.tally: Tally | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Future[None] | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def _send(self, obj: dict[str, Any]) -> None:
        assert self._writer is not None
        self._writer.write((json.dumps(obj) + "\n").encode())

    async def publish(self, parts: list[Participant]) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                   limit=1 << 24)
        self._task = asyncio.ensure_future(self._read())
        self.tally = parts[0].tally if parts else None
        for part in parts:  # join in index order: the room's join order (last-N)
            self.peers[part.pid] = Peers(part, self.ice)
            self._send({"op": "join", "pid": part.pid,
                        "room": self.scenario.room_name(part.index)})
        for part in parts:
            if part.streams:
                sdp = await self.peers[part.pid].pub_offer()
                self._send({"op": "msg", "pid": part.pid,
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

    def keepalive(self, parts: list[Participant]) -> None:
        for p in parts:
            self.peers[p.pid].keepalive()

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
                answer = await peers.sub_offer(msg["sdp"])
                self._send({"op": "msg", "pid": peers.part.pid,
                            "msg": {"type": "sfu-answer", "pc": "sub", "sdp": answer}})
            elif kind == "sfu-error":
                logger.warning("%s: sfu-error %s", peers.part.pid, msg.get("id"))
        except Exception:
            logger.exception("%s: handling %s", peers.part.pid, kind)

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
