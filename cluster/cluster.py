"""One node of a cluster: registration, placement, room records and the relay, on one
Redis (docs/DEPLOY.md "Several nodes").

``sealroom serve --redis URL`` makes a :class:`Cluster` and hands it to the signaling
server, as it hands it the media plane; the server calls :meth:`Cluster.host_of` at each
join, reads and writes room records through it and sends relay messages with it, and the
cluster calls the server back through :class:`Hooks` (its load, the rooms it hosts, relay
messages in, nodes gone). Every call that reaches Redis is bounded (``REDIS_TIMEOUT``) and
turns any failure into :class:`~cluster.errors.ClusterUnavailable`.

The renewal loop runs every lease / 3 (2 s) for the node's life, whatever Redis does: it
re-registers the node (after Redis was down or lost its keys, the first renewal that
succeeds is the re-registration), renews the host key and the record of every room the
node hosts, and checks that the nodes it bridges sockets with are still live.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from cluster.errors import ClusterUnavailable
from cluster.nodes import LEASE, NodeInfo, NodeRegistry
from cluster.placement import Placement
from cluster.relay import Relay
from cluster.roomstore import RoomRecord, RoomStore

log = logging.getLogger(__name__)

T = TypeVar("T")

REDIS_TIMEOUT = 5.0  # seconds any one operation on Redis may take, retries included
SOCKET_TIMEOUT = 3.0  # connect and read timeout of the client's sockets


class Hooks(Protocol):
    """What the cluster needs of the signaling server (signaling/server.py implements it)."""

    def cluster_load(self) -> int:
        """Participants this node hosts (placement's load)."""
        ...

    def hosted_records(self) -> list[tuple[str, RoomRecord]]:
        """The rooms this node hosts, as records."""
        ...

    def bridged_nodes(self) -> set[str]:
        """Nodes this node bridges a socket with, either way."""
        ...

    def relay_received(self, msg: dict[str, Any]) -> None:
        """A relay message for this node (cluster/relay.py)."""
        ...

    def nodes_gone(self, node_ids: set[str]) -> None:
        """Those of :meth:`bridged_nodes` whose lease expired."""
        ...

    def rooms_lost(self, rooms: list[str]) -> None:
        """Rooms this node hosts that another node holds now (this node was cut off for
        longer than a lease and they were placed again): their members must rejoin."""
        ...


def connect(url: str, *, client_name: str | None = None) -> Redis:
    """A redis-py asyncio client for ``url`` (``redis://``, ``rediss://`` for TLS,
    ``unix://``; user and password in the URL) with short, bounded timeouts and retries."""
    return Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 2),
        health_check_interval=5,
        client_name=client_name,
    )


class Cluster:
    """This node's view of the cluster."""

    def __init__(self, redis: Redis, info: NodeInfo, *, record_ttl: float,
                 lease: float = LEASE) -> None:
        self.redis = redis
        self.info = info
        self.node_id = info.id
        self.lease = lease
        self.nodes = NodeRegistry(redis, lease)
        self.placement = Placement(redis, lease)
        self.store = RoomStore(redis, record_ttl)
        self.relay = Relay(redis, info.id, self._received)
        self.up = False  # the last renewal reached Redis
        self.registered = asyncio.Event()  # set by the first successful renewal
        self.stats: Counter[str] = Counter()
        self._hooks: Hooks | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._left = False
        self._leaving: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, info: NodeInfo, *, record_ttl: float,
                 lease: float = LEASE) -> Cluster:
        return cls(connect(url, client_name=f"sealroom-{info.id}"), info,
                   record_ttl=record_ttl, lease=lease)

    # -- life ------------------------------------------------------------------------------

    async def start(self, hooks: Hooks) -> None:
        """Read this node's channel and start renewing; the first renewal is tried at once
        (bounded). A node starts even if Redis is down: joins are refused until it is
        back (``cluster-unavailable``), and the node registers then by itself."""
        self._hooks = hooks
        self.info = dataclasses.replace(self.info, started=self.info.started or time.time())
        self.relay.start()
        await self._renew()
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def leave(self) -> None:
        """A drain: no more renewals, the node's registration deleted and every room it
        hosts let go, so they are placed again (on another node) at their next join.
        Idempotent: a second call waits for the first."""
        if self._leaving is None:
            self._left = True
            if self._renewer is not None:
                self._renewer.cancel()
            self._leaving = asyncio.get_running_loop().create_task(self._leave())
        await asyncio.shield(self._leaving)

    async def _leave(self) -> None:
        hooks = self._hooks
        with contextlib.suppress(ClusterUnavailable):
            await self._call(self.nodes.deregister(self.node_id))
            for name, _ in hooks.hosted_records() if hooks is not None else []:
                await self._call(self.placement.release(name, self.node_id))
        log.info("cluster: node %s left", self.node_id)

    async def close(self) -> None:
        if not self._left or self._leaving is not None:
            await self.leave()
        await self.relay.close()
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    async def _renew_loop(self) -> None:
        period = self.lease / 3
        while True:  # the node's life; each pass bounded by REDIS_TIMEOUT per operation
            await asyncio.sleep(period)
            await self._renew()

    async def _renew(self) -> None:
        hooks = self._hooks
        if hooks is None or self._left:
            return
        try:
            self.info = dataclasses.replace(self.info, load=hooks.cluster_load())
            await self._call(self.nodes.register(self.info))
            hosted = hooks.hosted_records()
            lost = set(await self._call(self.placement.renew((n for n, _ in hosted),
                                                             self.node_id)))
            await self._call(self.store.refresh((n, r) for n, r in hosted if n not in lost))
            peers = hooks.bridged_nodes()
            gone = peers - await self._call(self.nodes.alive(peers)) if peers else set()
        except ClusterUnavailable as exc:
            if self.up:
                log.warning("cluster: Redis unreachable, node %s not renewed: %s",
                            self.node_id, exc)
            self.up = False
            return
        if not self.up:
            log.info("cluster: node %s registered (load %d)", self.node_id, self.info.load)
            self.stats["registrations"] += 1
        self.up = True
        self.registered.set()
        if lost:
            # Another node holds them now (this one was cut off for longer than a lease).
            self.stats["rooms_lost"] += len(lost)
            log.warning("cluster: %d hosted rooms are held by another node now", len(lost))
            hooks.rooms_lost(sorted(lost))
        if gone:
            hooks.nodes_gone(gone)

    # -- what the signaling server calls ---------------------------------------------------

    async def _call(self, aw: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                return await aw
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            self.stats["redis_errors"] += 1
            raise ClusterUnavailable(str(exc) or type(exc).__name__) from None

    async def host_of(self, room: str) -> str:
        """The node hosting ``room``, placed now if it has none."""
        host = await self._call(self.placement.place(room))
        if host is None:
            raise ClusterUnavailable("no live node")
        return host

    async def record(self, room: str) -> RoomRecord | None:
        return await self._call(self.store.get(room))

    async def create(self, room: str, record: RoomRecord) -> bool:
        return await self._call(self.store.create(room, record))

    async def save(self, room: str, record: RoomRecord) -> None:
        await self._call(self.store.put(room, record))

    async def forget(self, room: str) -> None:
        """The room expired here: its host key goes, and its record too unless another
        node hosts the room now (then the record is that node's)."""
        if await self._call(self.placement.release(room, self.node_id)):
            await self._call(self.store.delete(room))

    async def send(self, node_id: str, msg: dict[str, Any]) -> None:
        """A relay message to ``node_id`` (cluster/relay.py)."""
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                await self.relay.send(node_id, msg)
        except TimeoutError:
            raise ClusterUnavailable(f"relay to {node_id}: timed out") from None

    async def live_nodes(self) -> list[NodeInfo]:
        return await self._call(self.nodes.live())

    def gauges(self) -> dict[str, int]:
        return {"redis_up": int(self.up), "relay_subscribed": int(self.relay.subscribed.is_set())}

    def _received(self, msg: dict[str, Any]) -> None:
        if self._hooks is not None:
            self._hooks.relay_received(msg)
