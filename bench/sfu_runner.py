"""sealroom's SFU in its own process, behind a tiny control channel (the system under test).

``python -m bench.sfu_runner --port 0`` starts ``sfu.Sfu`` on uvloop and a TCP listener on
127.0.0.1 speaking JSON lines: ``{"op": "join", "pid", "room"}``, ``{"op": "msg", "pid",
"msg"}`` (a client→SFU message, docs/SFU.md), ``{"op": "leave", "pid"}`` and ``{"op":
"stats"}``; it writes ``{"pid", "msg"}`` for each SFU→client message and ``{"stats": …}``.
It prints ``{"port": N}`` on stdout when ready. Signaling crypto is not part of the
forwarding path, so the benchmark skips it; the media path is exactly ``sealroom serve``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

from sfu import Sfu, SfuConfig

logger = logging.getLogger("bench.sfu_runner")


async def serve(args: argparse.Namespace) -> None:
    sfu = Sfu(SfuConfig(bind_host=args.media_host, last_n=args.last_n))

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids: set[str] = set()

        def make_send(pid: str) -> Any:
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
                    await sfu.join(req["room"], req["pid"], make_send(req["pid"]))
                elif op == "msg":
                    await sfu.handle(req["pid"], req["msg"])
                elif op == "leave":
                    pids.discard(req["pid"])
                    await sfu.leave(req["pid"])
                elif op == "stats":
                    writer.write((json.dumps({"stats": sfu.stats()}) + "\n").encode())
        except ConnectionError:
            pass  # the generator went away: its participants leave below
        finally:
            for pid in pids:
                await sfu.leave(pid)
            writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", args.port, limit=1 << 24)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        server.close()
        await asyncio.wait_for(sfu.close(), 20.0)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.sfu_runner")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--media-host", default="127.0.0.1")
    p.add_argument("--last-n", type=int, default=0)
    p.add_argument("--log-level", default="warning")
    args = p.parse_args()
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="sfu %(levelname)s %(name)s: %(message)s")
    import uvloop
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
