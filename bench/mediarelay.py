"""The aiortc ``MediaRelay`` approach most Python projects use, as a system under test.

Each publisher's tracks are received by stock aiortc (jitter buffer + **decoder**), fanned
out with ``aiortc.contrib.media.MediaRelay``, and **re-encoded** by a stock sender per
subscriber. Because it decodes, it cannot forward E2EE media at all: an encrypted frame
does not decode. So it is measured with real VP8/Opus from the generator (``encoded_vp8``),
and since what comes out is a new encoding, per-packet loss and added latency cannot be
measured for it — only forwarded packets/s and CPU per forwarded packet.

``python -m bench.mediarelay --port 0`` speaks the same control channel as
``bench.sfu_runner`` (``join`` / ``msg`` / ``leave``); client messages are sealroom's
``sfu-offer`` (pub), ``sfu-answer`` (sub) plus ``sfu-subscribe``: "send me a sub offer
with every track published so far" (the generator sends it once all have published).
ICE binds 127.0.0.1 through ``sfu.ice.IcePolicy`` (aioice skips loopback by itself).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from bench import control
from sfu.ice import IcePolicy

logger = logging.getLogger("bench.mediarelay")


class Member:
    def __init__(self, pid: str, send: Any) -> None:
        self.pid = pid
        self.send = send
        self.pub: RTCPeerConnection | None = None
        self.sub: RTCPeerConnection | None = None
        self.tracks: list[MediaStreamTrack] = []


class RelayServer:
    def __init__(self, bind: str) -> None:
        self.ice = IcePolicy(bind)
        self.relay = MediaRelay()
        self.members: dict[str, Member] = {}

    def _pc(self) -> RTCPeerConnection:
        return RTCPeerConnection(RTCConfiguration(iceServers=[]))

    def _apply_ice(self, pc: RTCPeerConnection) -> None:
        transceivers: list[Any] = pc.getTransceivers()
        for t in transceivers:
            self.ice.apply(t.receiver.transport.transport.iceGatherer._connection)

    async def handle(self, member: Member, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "sfu-offer" and msg.get("pc") == "pub":
            pc = member.pub = self._pc()

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                member.tracks.append(track)

            await pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="offer"))
            self._apply_ice(pc)
            await pc.setLocalDescription(await pc.createAnswer())
            await member.send({"type": "sfu-answer", "pc": "pub",
                               "sdp": pc.localDescription.sdp})
        elif kind == "sfu-subscribe":
            pc = member.sub = self._pc()
            tracks = []
            for other in self.members.values():
                if other is not member:
                    for track in other.tracks:
                        pc.addTrack(self.relay.subscribe(track))
                        tracks.append({"participant": other.pid, "kind": track.kind})
            if not tracks:
                return
            self._apply_ice(pc)
            await pc.setLocalDescription(await pc.createOffer())
            await member.send({"type": "sfu-offer", "pc": "sub",
                               "sdp": pc.localDescription.sdp, "tracks": tracks})
        elif kind == "sfu-answer" and msg.get("pc") == "sub" and member.sub is not None:
            await member.sub.setRemoteDescription(
                RTCSessionDescription(sdp=msg["sdp"], type="answer"))

    async def leave(self, pid: str) -> None:
        member = self.members.pop(pid, None)
        if member is None:
            return
        for pc in (member.pub, member.sub):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5.0)


class RelayPlane:
    """``RelayServer`` behind the benchmark's control channel (bench/control.py)."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server

    async def join(self, room: str, pid: str, send: control.Send) -> None:
        self.server.members[pid] = Member(pid, send)

    async def handle(self, pid: str, msg: dict[str, Any]) -> None:
        member = self.server.members.get(pid)
        if member is None:
            return
        try:
            await self.server.handle(member, msg)
        except Exception:
            logger.exception("handling %s", msg.get("type"))

    async def leave(self, pid: str) -> None:
        await self.server.leave(pid)

    async def close(self) -> None:
        for pid in list(self.server.members):
            await self.server.leave(pid)

    def stats(self) -> dict[str, int]:
        return {}


async def serve(args: argparse.Namespace) -> None:
    await control.serve(RelayPlane(RelayServer(args.media_host)), args.port)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.mediarelay")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--media-host", default="127.0.0.1")
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="relay %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
