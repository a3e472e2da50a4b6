"""The control channel a system under test speaks to the load generator.

JSON lines over TCP on 127.0.0.1: ``{"op": "join", "pid", "room"}``, ``{"op": "msg", "pid",
"msg"}`` (a client→SFU message, docs/SFU.md), ``{"op": "leave", "pid"}`` and ``{"op":
"stats"}``; the system writes ``{"pid", "msg"}`` for each SFU→client message and
``{"stats": …}``. ``serve`` prints ``{"port": N}`` on stdout when ready and runs until
SIGINT/SIGTERM. Signaling crypto is not on the forwarding path, so benchmarks skip it.
Used by ``bench.sfu_runner`` (sealroom's SFU) and ``bench.mediarelay``.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Send = Callable[[dict[str, Any]], Awaitable[None]]


class MediaPlane(Protocol):
    """The SFU interface (signaling.server.MediaPlane) plus ``stats``."""

    async def join(self, room: str, pid: str, send: Send) -> None: ...

    async def handle(self, pid: str, msg: dict[str, Any]) -> None: ...

    async def leave(self, pid: str) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, int]: ...


async def serve(plane: MediaPlane, port: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids: set[str] = set()

        def make_send(pid: str) -> Send:
            async def send(msg: dict[str, Any]) -> None:
                writer.write((json.dumps({"pid": pid, "msg": msg}) + "\n").encode())
            return send

        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                req = json.loads(line)
                op = req.get("op")
                if op == "join":
                    pids.add(req["pid"])
                    await plane.join(req["room"], req["pid"], make_send(req["pid"]))
                elif op == "msg":
                    await plane.handle(req["pid"], req["msg"])
                elif op == "leave":
                    pids.discard(req["pid"])
                    await plane.leave(req["pid"])
                elif op == "stats":
                    writer.write((json.dumps({"stats": plane.stats()}) + "\n").encode())
        except ConnectionError:
            pass  # the generator went away: its participants leave below
        finally:
            for pid in pids:
                await plane.leave(pid)
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", port, limit=1 << 24)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await asyncio.wait_for(plane.close(), 20.0)
