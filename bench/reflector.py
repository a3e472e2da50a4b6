"""The floor: a bare uvloop UDP reflector doing only the socket work of an SFU.

Server (``python -m bench.reflector``): one UDP socket; a datagram ``JOIN`` registers its
source address as a room member; any other datagram is sent unchanged to every other
member. No ICE, no DTLS, no SRTP, no parsing: what Python + uvloop cost per forwarded
packet on this machine before any SFU logic. It prints ``{"port": N}`` when ready.

Client (``ReflectorClient``): the generator's backend for it, one plain UDP socket per
virtual participant, the same packets as for a real SFU (unencrypted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
from typing import Any

from .gen import Counted, Participant, raw_send

JOIN = b"JOIN"
BUFFER = 4 * 1024 * 1024


class Reflector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.members: list[Any] = []
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's UDPTransport is not an asyncio subclass

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data == JOIN:
            if addr not in self.members:
                self.members.append(addr)
            return
        sendto = self.transport.sendto
        for member in self.members:
            if member != addr:
                sendto(data, member)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
    sock.bind(("127.0.0.1", port))
    transport, _ = await loop.create_datagram_endpoint(Reflector, sock=sock)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()


class ReflectorClient:
    """Generator backend: plain UDP, no handshake."""

    def __init__(self, host: str, port: int) -> None:
        self.addr = (host, port)
        self.transports: list[asyncio.DatagramTransport] = []

    async def publish(self, parts: list[Participant]) -> None:
        loop = asyncio.get_running_loop()
        for part in parts:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
            sock.bind(("127.0.0.1", 0))
            # plaintext: stamped and counted in C (bench/_receive.c), as for the SFUs
            endpoint = part.tally.endpoint(sock, part.index, None)
            transport, _ = await loop.create_datagram_endpoint(
                lambda e=endpoint: Counted(e), sock=sock)  # type: ignore[misc]
            self.transports.append(transport)
            transport.sendto(JOIN, self.addr)
            for s in part.streams:
                s.send = raw_send(sock, self.addr, part.tally)

    async def subscribe(self, parts: list[Participant]) -> None:
        await asyncio.sleep(0.1)  # the JOINs are datagrams; give them a moment

    def keepalive(self, parts: list[Participant], pub: bool = False) -> None:
        """Nothing to keep alive."""

    async def close(self) -> None:
        for t in self.transports:
            t.close()
        self.transports.clear()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.reflector")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    import uvloop
    uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
