"""Where ICE listens: one host candidate on a configured address and UDP port range.

aioice gathers on every interface address except 127.0.0.1 (``get_host_addresses``).
The SFU instead wants exactly one address it was told (loopback works), optionally
announcing a different one (behind 1:1 NAT), and ports from a range. The cleanest hook
aioice offers is ``Connection.get_component_candidates``, which binds the sockets and
builds the host candidates: we replace it on each Connection we own. STUN and TURN are
never used by the SFU (it is the public end; iceServers=[]), so only host candidates.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import Any

from aioice import Candidate
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol

logger = logging.getLogger(__name__)

UDP_BUFFER = 4 * 1024 * 1024


class IcePolicy:
    """Bind address, announced address and port range for the host candidate."""

    def __init__(self, bind_host: str = "127.0.0.1", announced_host: str | None = None,
                 port_min: int = 0, port_max: int = 0) -> None:
        if (port_min or port_max) and not 0 < port_min <= port_max <= 65535:
            raise ValueError("port range must satisfy 0 < port_min <= port_max <= 65535")
        self.bind_host = bind_host
        self.announced_host = announced_host
        self.port_min = port_min
        self.port_max = port_max

    def ports(self) -> list[int]:
        """Ports to try, in random order so concurrent sessions rarely collide."""
        if not self.port_min:
            return [0]
        ports = list(range(self.port_min, self.port_max + 1))
        random.shuffle(ports)
        return ports[:256]  # bounded: never more than 256 bind attempts

    def apply(self, connection: Any) -> None:
        """Make this aioice ``Connection`` gather only our host candidate."""
        if getattr(connection, "_sealroom_ice", False):
            return
        connection._sealroom_ice = True
        connection.stun_server = None
        connection.turn_server = None
        policy = self

        async def get_component_candidates(component: int, addresses: list[str],
                                           timeout: int = 5) -> list[Candidate]:
            del addresses, timeout  # the machine's addresses are not ours to announce
            return [await policy._bind(connection, component)]

        connection.get_component_candidates = get_component_candidates

    async def _bind(self, connection: Any, component: int) -> Candidate:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for port in self.ports():
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: StunProtocol(connection), local_addr=(self.bind_host, port)
                )
            except OSError as exc:
                last = exc
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
            host, bound_port = transport.get_extra_info("sockname")[:2]
            host = self.announced_host or host
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=bound_port,
                type="host",
            )
            connection._protocols.append(protocol)
            return protocol.local_candidate
        raise OSError(f"no free UDP port on {self.bind_host} in "
                      f"{self.port_min}..{self.port_max}: {last}")
