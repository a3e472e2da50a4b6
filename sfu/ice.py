"""Where ICE listens: one host candidate on a configured address and UDP port range.

aioice gathers on every interface address except 127.0.0.1 (``get_host_addresses``).
The SFU instead wants exactly one address it was told (loopback works), optionally
announcing a different one (behind 1:1 NAT), and ports from a range. The cleanest hook
aioice offers is ``Connection.get_component_candidates``, which binds the sockets and
builds the host candidates: we replace it on each Connection we own. STUN and TURN are
never used by the SFU (it is the public end; iceServers=[]), so only host candidates.

Clients (the Python ``MediaBot``) may instead be given a :class:`TurnRelay`: a TURN
server and the REST credentials the signaling server minted (``turn`` message). With
``relay_only`` the connection offers nothing but its relayed candidate, like a browser
with ``iceTransportPolicy: "relay"`` (RFC 9429 §4.1.1 / §3.5.3), so every packet goes
through the TURN server.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aioice import Candidate, TransportPolicy
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, relayed_candidate

logger = logging.getLogger(__name__)

UDP_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True)
class TurnRelay:
    """A TURN server to allocate a relayed candidate on (RFC 8656), with its credentials."""

    host: str
    port: int
    username: str
    password: str
    transport: str = "udp"
    relay_only: bool = False

    def __repr__(self) -> str:  # never print the password
        return f"TurnRelay({self.host}:{self.port}/{self.transport}, relay_only={self.relay_only})"

    @classmethod
    def from_ice_server(cls, server: dict[str, Any], relay_only: bool = False) -> TurnRelay:
        """The first plain ``turn:`` URL of an RTCIceServer dictionary (``turns:`` unsupported).

        URL syntax: RFC 7065 §3.1, ``turn:host[:port][?transport=udp|tcp]``.
        """
        urls = server.get("urls")
        for url in [urls] if isinstance(urls, str) else list(urls or []):
            scheme, _, rest = str(url).partition(":")
            if scheme != "turn":
                continue
            hostport, _, query = rest.partition("?")
            transport = parse_qs(query).get("transport", ["udp"])[0]
            if hostport.startswith("["):  # IPv6 literal
                host, _, tail = hostport[1:].partition("]")
                port = int(tail[1:]) if tail.startswith(":") else 3478
            else:
                host, _, port_text = hostport.partition(":")
                port = int(port_text) if port_text else 3478
            return cls(host, port, str(server["username"]), str(server["credential"]),
                       transport, relay_only)
        raise ValueError("no turn: URL in the ICE server")


class IcePolicy:
    """Bind address, announced address and port range for the host candidate.

    With ``turn``, a relayed candidate from that TURN server is gathered too (or alone,
    if ``turn.relay_only``); gathering fails if the allocation fails, rather than quietly
    connecting without the relay the caller asked for.
    """

    def __init__(self, bind_host: str = "127.0.0.1", announced_host: str | None = None,
                 port_min: int = 0, port_max: int = 0, turn: TurnRelay | None = None) -> None:
        if (port_min or port_max) and not 0 < port_min <= port_max <= 65535:
            raise ValueError("port range must satisfy 0 < port_min <= port_max <= 65535")
        self.bind_host = bind_host
        self.announced_host = announced_host
        self.port_min = port_min
        self.port_max = port_max
        self.turn = turn

    def ports(self) -> list[int]:
        """Ports to try, in random order so concurrent sessions rarely collide."""
        if not self.port_min:
            return [0]
        ports = list(range(self.port_min, self.port_max + 1))
        random.shuffle(ports)
        return ports[:256]  # bounded: never more than 256 bind attempts

    def apply(self, connection: Any) -> None:
        """Make this aioice ``Connection`` gather only our host (and/or relayed) candidate."""
        if getattr(connection, "_sealroom_ice", False):
            return
        connection._sealroom_ice = True
        connection.stun_server = None
        connection.turn_server = None
        if self.turn is not None and self.turn.relay_only:
            connection._transport_policy = TransportPolicy.RELAY  # also ignores mDNS peers
        policy = self

        async def get_component_candidates(component: int, addresses: list[str],
                                           timeout: int = 5) -> list[Candidate]:
            del addresses, timeout  # the machine's addresses are not ours to announce
            candidates: list[Candidate] = []
            if policy.turn is None or not policy.turn.relay_only:
                candidates.append(await policy._bind(connection, component))
            if policy.turn is not None:
                candidates.append(await policy._relay(connection, component, policy.turn))
            return candidates

        connection.get_component_candidates = get_component_candidates

    async def _relay(self, connection: Any, component: int, relay: TurnRelay) -> Candidate:
        """Allocate on the TURN server (RFC 8656 §7); raises if it refuses (e.g. 401)."""
        candidate, protocol = await asyncio.wait_for(
            relayed_candidate(
                component=component,
                # RFC 9429 §3.5.3: with relay only, do not reveal the host address.
                hide_related_address=relay.relay_only,
                protocol_factory=lambda: StunProtocol(connection),
                turn_server=(relay.host, relay.port),
                turn_username=relay.username,
                turn_password=relay.password,
                turn_ssl=False,
                turn_transport=relay.transport,
            ),
            timeout=10.0,
        )
        connection._protocols.append(protocol)
        return candidate

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
